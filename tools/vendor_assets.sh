#!/usr/bin/env bash
# Refresh the JavaScript the rendered book loads (book/_static/vendor/) from npm: `make vendor`.
#
# The book must work offline, so MathJax, RequireJS and the ipywidgets HTML manager are
# committed to the repository instead of loaded from CDNs. This script rebuilds that folder
# from pinned npm tarballs whose sha512 integrity is pinned here too, so two runs give the
# same files. It keeps only what the pages load (and each package's licence):
#   mathjax/      tex-mml-chtml.js (Sphinx's default component), the TeX extensions its
#                 autoloader fetches on demand, and the CHTML woff2 fonts
#   requirejs/    require.js (the widget manager is an AMD module)
#   html-manager/ embed-amd.js (bundles @jupyter-widgets/base, controls and output) and the
#                 Font Awesome woff2 fonts its CSS asks for (loaded relative to embed-amd.js)
# To upgrade: change a version below, set its integrity to "" and run `make vendor`; the
# script prints the new integrity to pin.  Needs npm and tar.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=book/_static/vendor

MATHJAX=mathjax@3.2.2
REQUIREJS=requirejs@2.3.8
HTML_MANAGER=@jupyter-widgets/html-manager@1.0.15   # matches ipywidgets 8.1 (widget protocol 2)
WIDGETS_BASE=@jupyter-widgets/base@6.0.11           # only for its LICENSE (same repository, BSD-3-Clause)
FONTAWESOME=@fortawesome/fontawesome-free@5.15.4    # only for its LICENSE.txt (the fonts come bundled in html-manager)
declare -A INTEGRITY=(
  [$MATHJAX]="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
  [$REQUIREJS]="sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw=="
  [$HTML_MANAGER]="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
  [$WIDGETS_BASE]="sha512-s4+UM7DlrhCOqWCh18fSPjOOLWQlKb+vTxHvOQbvwqgwe6pEuncykzZ1vbii71G5RC5tZ+lQblYR1SWDNdq3qQ=="
  [$FONTAWESOME]="sha512-eYm8vijH/hpzr/6/1CJ/V/Eb1xQFW2nnUKArb3z+yUWv7HTwj6M7SP957oMjfZjAHU6qpoNc2wQvIxBLWYa/Jg=="
)

command -v npm >/dev/null || { echo "error: npm not found; install Node.js (Debian: apt-get install npm)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch SPEC: download its tarball into $work, check the pinned integrity, unpack to $work/SPEC/
fetch() {
  local spec=$1 tarball integrity
  tarball=$(cd "$work" && npm pack "$spec" --silent | tail -n 1)  # npm prints the tarball's name
  integrity="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
  if [ "$integrity" != "${INTEGRITY[$spec]}" ]; then
    echo "error: $spec has integrity $integrity, but tools/vendor_assets.sh pins '${INTEGRITY[$spec]}'." >&2
    echo "       If you changed the version on purpose, pin the new integrity in INTEGRITY." >&2
    exit 1
  fi
  mkdir -p "$work/$spec"
  tar xzf "$work/$tarball" -C "$work/$spec" --strip-components=1
  echo "$spec $integrity" >> "$work/VERSIONS"
}

for spec in "$MATHJAX" "$REQUIREJS" "$HTML_MANAGER" "$WIDGETS_BASE" "$FONTAWESOME"; do
  echo "npm pack $spec"
  fetch "$spec"
done

rm -rf "$DEST"
mkdir -p "$DEST/mathjax/input/tex" "$DEST/mathjax/output/chtml/fonts" "$DEST/requirejs" "$DEST/html-manager"

src="$work/$MATHJAX"
cp "$src/LICENSE" "$src/es5/tex-mml-chtml.js" "$DEST/mathjax/"
cp -r "$src/es5/input/tex/extensions" "$DEST/mathjax/input/tex/"
cp -r "$src/es5/output/chtml/fonts/woff-v2" "$DEST/mathjax/output/chtml/fonts/"

src="$work/$REQUIREJS"
cp "$src/require.js" "$DEST/requirejs/"
cp tools/vendor_licenses/requirejs-LICENSE "$DEST/requirejs/LICENSE"  # the npm tarball has none

src="$work/$HTML_MANAGER"
cp "$src/dist/embed-amd.js" "$DEST/html-manager/"
cp "$src/dist/"*.woff2 "$DEST/html-manager/"
cp "$work/$WIDGETS_BASE/LICENSE" "$DEST/html-manager/LICENSE"
cp "$src/dist/embed.js.LICENSE.txt" "$DEST/html-manager/THIRD-PARTY-NOTICES.txt"
cp "$work/$FONTAWESOME/LICENSE.txt" "$DEST/html-manager/FONTAWESOME-LICENSE.txt"

{
  echo "# Written by tools/vendor_assets.sh (make vendor): npm package, version and tarball integrity."
  echo "# The files kept from each are listed in that script."
  cat "$work/VERSIONS"
} > "$DEST/VERSIONS"

# nothing above 20 MB, and the whole folder stays small (it is committed)
find "$DEST" -type f -size +20M -exec echo "error: {} is over 20 MB" \; | grep . >&2 && exit 1
echo "wrote $DEST ($(du -sh "$DEST" | cut -f1), $(find "$DEST" -type f | wc -l) files)"
