#!/usr/bin/env bash
# Prints (on one line) the Debian packages of the production setup (ui/production.py) that are
# not installed yet: nginx-light (nginx with gzip_static and auth_request), its brotli filter and
# static modules, the brotli command (precompression) and openssl (the tests' certificate).
# Used by scripts/serve-production.sh and scripts/test.sh.
missing=()
{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 || missing+=(nginx-light)
modules=/usr/lib/nginx/modules
[ -e "$modules/ngx_http_brotli_filter_module.so" ] || missing+=(libnginx-mod-http-brotli-filter)
[ -e "$modules/ngx_http_brotli_static_module.so" ] || missing+=(libnginx-mod-http-brotli-static)
command -v brotli >/dev/null 2>&1 || missing+=(brotli)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
echo "${missing[*]}"
