"""What the layers are: names, required attributes, allowed values and geometry kinds.

This is the import format as data. Readers, the importer, the stores and the sample builder all
read it from here, so a column added to a layer is added once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Geometries are stored in one CRS: CGCS2000 geographic (EPSG:4490). It differs from WGS84 by
# centimetres, which is below the precision of every layer we route against.
STORE_EPSG = 4490

GRID_KINDS = ("comprehensive", "park", "dedicated")
PARK_KINDS = ("chemical_park", "dev_zone_national", "dev_zone_provincial", "other")
BUREAU_LEVELS = ("municipal", "county", "numbered", "park")
WORKER_ROLES = ("worker", "leader")
PERMIT_CLASSES = ("重点管理", "简化管理", "登记管理", "")
# The words people read for those codes (cards, exports, reasons, findings): one table each.
GRID_KIND_ZH = {"comprehensive": "综合网格", "park": "园区网格", "dedicated": "专属网格"}
PARK_KIND_ZH = {"chemical_park": "化工园区", "dev_zone_national": "国家级开发区",
                "dev_zone_provincial": "省级开发区", "other": "园区"}
BUREAU_LEVEL_ZH = {"municipal": "市级", "county": "县（市）、区级", "numbered": "编号执法局",
                   "park": "园区/区域执法局"}
WORKER_ROLE_ZH = {"worker": "网格员", "leader": "网格长"}

# A code (a county's, a park's, a worker's id …): no space and none of the characters that
# mean markup or quoting somewhere it is shown or sent (HTML, a URL, a CSV cell).
CODE_PATTERN = r"[^\s<>&\"'`\\]+"
CODE_HINT = "编码不能含空格或 < > & \" ' ` \\ 等字符"
# Longest text accepted in a required column (codes, names, kinds) and in any extra column.
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 2000
# Phone numbers as a worker's card shows them: a mainland mobile (13800000000, 138-0000-0000,
# +86 13800000000) or a landline with its area code (0513-12345678, 051312345678,
# (0513)12345678), optionally with an extension (-123, 转123, #123, ext 123). ASCII digits only.
PHONE_PATTERN = (
    r"(?:\+?86[- ]?)?1[3-9][0-9](?:[- ]?[0-9]{4}){2}"
    r"|(?:\(0[0-9]{2,3}\)|0[0-9]{2,3})[- ]?[1-9][0-9]{6,7}"
    r"(?:(?:-|转|#|[ ]?(?:ext|EXT)\.?[ ]?)[0-9]{1,6})?"
)
PHONE_HINT = "应为手机号（如 13800000000）或带区号的座机号（如 0513-12345678，可带分机号 -123）"


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the import format."""

    name: str
    title_zh: str
    geometry: str | None  # "polygon", "point" or None for a plain table
    required: tuple[str, ...]
    key: str = "code"
    optional: bool = False
    # Allowed values of enumerated columns (empty string allowed only where listed).
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Columns that reference another layer's key: column -> layer name. Empty values allowed
    # only for columns listed in `nullable`.
    refs: dict[str, str] = field(default_factory=dict)
    nullable: tuple[str, ...] = ()
    # Point layers may come as a table with longitude/latitude columns instead of geometries.
    lonlat: bool = False
    # Columns whose non-empty values must match a pattern: column -> (regex, hint in Chinese).
    patterns: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def checked_patterns(self) -> dict[str, tuple[str, str]]:
        """`patterns`, and for the key every layer's rule for a code (CODE_PATTERN): what
        other rows, URLs and file names refer to a feature by."""
        return {self.key: (CODE_PATTERN, CODE_HINT), **self.patterns} if self.key else dict(
            self.patterns)


LAYERS: dict[str, LayerSpec] = {
    spec.name: spec
    for spec in (
        LayerSpec("counties", "县（市）、区", "polygon", ("code", "name")),
        LayerSpec(
            "townships",
            "乡镇/街道",
            "polygon",
            ("code", "name", "county_code"),
            refs={"county_code": "counties"},
        ),
        LayerSpec(
            "parks",
            "园区",
            "polygon",
            ("code", "name", "kind", "county_code"),
            choices={"kind": PARK_KINDS},
            refs={"county_code": "counties"},
        ),
        LayerSpec(
            "grids",
            "网格",
            "polygon",
            ("code", "name", "township_code", "kind"),
            choices={"kind": GRID_KINDS},
            refs={"township_code": "townships"},
        ),
        LayerSpec(
            "sea_areas",
            "海域",
            "polygon",
            ("code", "name", "county_code"),
            optional=True,
            refs={"county_code": "counties"},
        ),
        LayerSpec(
            "bureaus",
            "执法机构",
            None,
            ("code", "name", "level", "parent_code", "county_code", "park_code"),
            choices={"level": BUREAU_LEVELS},
            refs={"parent_code": "bureaus", "county_code": "counties", "park_code": "parks"},
            nullable=("parent_code", "county_code", "park_code"),
        ),
        LayerSpec(
            "jurisdictions",
            "执法辖区",
            "polygon",
            ("bureau_code",),
            key="",
            optional=True,
            refs={"bureau_code": "bureaus"},
        ),
        LayerSpec(
            "workers",
            "网格员",
            None,
            ("id", "name", "phone", "grid_code", "role"),
            key="",
            choices={"role": WORKER_ROLES},
            refs={"grid_code": "grids"},
            patterns={"phone": (PHONE_PATTERN, PHONE_HINT)},
        ),
        LayerSpec(
            "entities",
            "监管对象",
            "point",
            ("id", "name", "industry", "permit_class"),
            key="id",
            optional=True,
            choices={"permit_class": PERMIT_CLASSES},
            nullable=("permit_class",),  # small shops and restaurants may hold no permit
            lonlat=True,
        ),
        LayerSpec(
            "precedence",
            "优先规则",
            None,
            ("subject", "key", "rank", "label_zh"),
            key="",
            optional=True,
        ),
    )
}

POLYGON_LAYERS = tuple(n for n, s in LAYERS.items() if s.geometry == "polygon")
# Layers whose polygons a location is matched against when routing.
ROUTING_LAYERS = ("counties", "townships", "grids", "parks", "sea_areas", "jurisdictions")

# The order layers are validated and written in: referenced layers first.
LAYER_ORDER = tuple(LAYERS)
