#!/usr/bin/env bash
# Re-fetch every vendored front-end asset from the npm registry (`npm pack`, no install scripts
# run), copy the files the map needs into static/vendor/<package>@<version>/, derive the two
# small generated files, and rewrite manifest.json (path, bytes, sha256, package, version,
# license). Edit the version list below, run `static/vendor/refresh.sh`, then run the tests
# (tests/test_app.py checks the manifest against the files and ui/assets.py's registry).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# package@version  →  the files copied (paths inside the npm tarball's package/ directory)
declare -A FILES=(
  [leaflet@1.9.4]="dist/leaflet.js dist/leaflet.css dist/images/layers.png dist/images/layers-2x.png dist/images/marker-icon.png dist/images/marker-icon-2x.png dist/images/marker-shadow.png LICENSE"
  [leaflet.markercluster@1.5.3]="dist/leaflet.markercluster.js dist/MarkerCluster.css dist/MarkerCluster.Default.css MIT-LICENCE.txt"
  [leaflet-draw@1.0.4]="dist/leaflet.draw.js dist/leaflet.draw.css dist/images/spritesheet.png dist/images/spritesheet-2x.png dist/images/spritesheet.svg dist/images/layers.png dist/images/layers-2x.png dist/images/marker-icon.png dist/images/marker-icon-2x.png dist/images/marker-shadow.png"
  [leaflet.awesome-markers@2.0.5]="dist/leaflet.awesome-markers.js dist/leaflet.awesome-markers.css dist/images/markers-soft.png dist/images/markers-soft@2x.png dist/images/markers-shadow.png dist/images/markers-shadow@2x.png LICENSE"
  [jquery@3.7.1]="dist/jquery.min.js LICENSE.txt"
  [bootstrap@5.2.2]="dist/js/bootstrap.bundle.min.js dist/css/bootstrap.min.css LICENSE"
  [bootstrap@3.4.1]="dist/fonts/glyphicons-halflings-regular.eot dist/fonts/glyphicons-halflings-regular.svg dist/fonts/glyphicons-halflings-regular.ttf dist/fonts/glyphicons-halflings-regular.woff dist/fonts/glyphicons-halflings-regular.woff2 dist/css/bootstrap.css LICENSE"
  [swagger-ui-dist@5.35.0]="swagger-ui.css swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt LICENSE NOTICE"
  [@fortawesome/fontawesome-free@6.2.0]="css/all.min.css webfonts/fa-brands-400.ttf webfonts/fa-brands-400.woff2 webfonts/fa-regular-400.ttf webfonts/fa-regular-400.woff2 webfonts/fa-solid-900.ttf webfonts/fa-solid-900.woff2 webfonts/fa-v4compatibility.ttf webfonts/fa-v4compatibility.woff2 LICENSE.txt"
)

find "$here" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
for spec in "${!FILES[@]}"; do
  name="${spec%@*}"; version="${spec##*@}"
  dest="$here/${name##*/}@$version"
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  tarball="$(ls -t "$work"/*.tgz | head -n 1)"
  mkdir -p "$work/x" && rm -rf "$work/x/package" && tar xzf "$tarball" -C "$work/x"
  cp "$work/x/package/package.json" "$work/${name##*/}@$version.package.json"
  for f in ${FILES[$spec]}; do
    # dist/ and the dist/css, dist/js level are dropped: <pkg>@<ver>/leaflet.js, images/…
    rel="${f#dist/}"; rel="${rel#js/}"; rel="${rel#css/}"
    case "$spec" in bootstrap@3.4.1) rel="${f#dist/}";; @fortawesome/*) rel="$f";; esac
    mkdir -p "$dest/$(dirname "$rel")"
    cp "$work/x/package/$f" "$dest/$rel"
  done
  rm -f "$tarball"
done

# leaflet-draw ships no licence file: its package.json says MIT; record the notice.
cat > "$here/leaflet-draw@1.0.4/LICENSE" <<'TXT'
Leaflet.draw 1.0.4 — MIT licence (as declared in the npm package's package.json).
Copyright (c) 2012-2017, Jacob Toye, Jon West, Smartrak, Leaflet. https://github.com/Leaflet/Leaflet.draw
Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions: The above copyright notice and this
permission notice shall be included in all copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND.
TXT

# Generated files: the glyphicon rules of Bootstrap 3 alone (folium's awesome markers use them;
# the whole Bootstrap 3 sheet would fight Bootstrap 5), and folium's fa-rotate-N classes.
python3 - "$here" "$work" <<'PY'
import hashlib, json, pathlib, re, sys
here, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
bs3 = here / "bootstrap@3.4.1"
css = (bs3 / "css/bootstrap.css").read_text()
rules = re.findall(r"(@font-face\s*\{[^}]*Glyphicons Halflings[^}]*\}|[^{}]*\.glyphicon[^{}]*\{[^}]*\})", css)
(bs3 / "css/glyphicons.css").write_text(
    "/* Derived by static/vendor/refresh.sh from bootstrap@3.4.1 dist/css/bootstrap.css: only the"
    " Glyphicons rules. MIT, (c) Twitter, Inc. */\n" + "\n".join(r.strip() for r in rules) + "\n")
(bs3 / "css/bootstrap.css").unlink()
rot = here / "gridmap-rotate@1"
rot.mkdir(exist_ok=True)
(rot / "awesome-rotate.css").write_text(
    "/* Generated by static/vendor/refresh.sh: folium.Icon(angle=N) adds class fa-rotate-N. */\n"
    + "".join(f".fa-rotate-{a}{{transform:rotate({a}deg)}}" for a in range(360)) + "\n")
licences = {}
for pj in work.glob("*.package.json"):
    meta = json.loads(pj.read_text())
    licences[pj.name.removesuffix(".package.json")] = meta.get("license", "")
files = []
for path in sorted(p for p in here.rglob("*") if p.is_file()):
    rel = path.relative_to(here).as_posix()
    if "/" not in rel:
        continue  # ASSETS.md, refresh.sh, manifest.json themselves
    top = rel.split("/", 1)[0]
    package, version = top.rsplit("@", 1)
    package = {"fontawesome-free": "@fortawesome/fontawesome-free",
               "gridmap-rotate": "(generated)"}.get(package, package)
    files.append({"path": rel, "bytes": path.stat().st_size,
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                  "package": package, "version": version,
                  "license": licences.get(top, "MIT (this project)" if package == "(generated)" else "")})
(here / "manifest.json").write_text(json.dumps({"files": files}, indent=1, ensure_ascii=False) + "\n")
print(f"{len(files)} files, {sum(f['bytes'] for f in files) / 1e6:.2f} MB")
PY
