#!/usr/bin/env bash
# Screenshots of a report page with headless Chromium, to check the layout by eye at two widths.
#   scripts/screenshots.sh RUN_FOLDER_OR_HTML [OUT_DIR]
#     RUN_FOLDER_OR_HTML  a run folder (its report.html), a sweep folder (its index.html) or an .html file
#     OUT_DIR             where the PNGs go (default: next to the page)
# Writes <folder>_<page>_1400.png (desktop) and <folder>_<page>_420.png (phone), each the page's full height.
# WIDTHS="1400 420" (CSS pixels, space-separated) and CHROMIUM=/path/to/chromium override the defaults.
# Needs Chromium: on Debian/Ubuntu `apt-get install -y chromium`.
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage

CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$CHROMIUM" ] || [ ! -x "$CHROMIUM" ]; then
  echo "screenshots.sh: Chromium not found (no /usr/bin/chromium, chromium-browser or google-chrome on PATH);" \
       "install it with 'apt-get install -y chromium' (Debian/Ubuntu) or set CHROMIUM=/path/to/chromium" >&2
  exit 2
fi

target=$1
if [ -d "$target" ]; then
  if [ -f "$target/report.html" ]; then page=$target/report.html
  elif [ -f "$target/index.html" ]; then page=$target/index.html
  else echo "screenshots.sh: $target holds neither report.html nor index.html" >&2; exit 2; fi
elif [ -f "$target" ]; then page=$target
else echo "screenshots.sh: $target: no such file or folder" >&2; exit 2; fi
page=$(cd "$(dirname "$page")" && pwd)/$(basename "$page")
out=${2:-$(dirname "$page")}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Every run folder's page is report.html and every sweep's index.html: the folder's name tells PNGs apart.
stem=$(basename "$(dirname "$page")")_$(basename "$page" .html)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
chrome() {
  # A fresh profile per call: a profile is locked while a lingering process of the previous call exits.
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d -p "$scratch")" --hide-scrollbars "$@" \
    2>>"$scratch/chromium.log"
}
# Pillow (a dejavu dependency: the repository's .venv has it) or ImageMagick, whichever works.
PYTHON=${PYTHON:-$(cd "$(dirname "$0")/.." && [ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}
crop() {  # crop PNG $1 to width $2, in place
  "$PYTHON" -c "import sys; from PIL import Image; i = Image.open(sys.argv[1]); i.crop((0, 0, int(sys.argv[2]), i.height)).save(sys.argv[1])" \
    "$1" "$2" 2>/dev/null && return 0
  magick "$1" -crop "${2}x+0+0" +repage "$1" 2>/dev/null && return 0
  convert "$1" -crop "${2}x+0+0" +repage "$1" 2>/dev/null
}

# Chromium's window is never narrower than 500 px, and headless Chromium has no full-page screenshot:
# the page is shown in an iframe of the wanted width (its media queries see that width, as on a phone),
# first to measure its height (the copy in the iframe posts its size to the frame around it), then at
# that height for the picture.
probe=$scratch/probe.html
cp "$page" "$probe"
printf '%s\n' '<script>window.addEventListener("load",function(){var e=document.documentElement;' \
  'parent.postMessage("SIZE="+Math.ceil(e.scrollWidth)+"x"+Math.ceil(e.scrollHeight),"*")})</script>' >>"$probe"
frame() {  # frame FILE SRC WIDTH HEIGHT: a page holding SRC in an iframe WIDTH x HEIGHT, titled by its message
  printf '%s\n' '<!DOCTYPE html><html><head><meta charset="utf-8"><title>-</title></head>' \
    '<body style="margin:0;background:#fff">' \
    "<iframe src=\"$2\" style=\"border:0;display:block;width:${3}px;height:${4}px\"></iframe>" \
    '<script>window.addEventListener("message",function(e){document.title=e.data})</script></body></html>' >"$1"
}

for width in ${WIDTHS:-1400 420}; do
  window=$(( width < 500 ? 500 : width ))
  frame "$scratch/measure.html" "file://$probe" "$width" 800
  size=$(chrome --window-size="$window,800" --virtual-time-budget=10000 --dump-dom "file://$scratch/measure.html" \
         | grep -o 'SIZE=[0-9]\+x[0-9]\+' | head -1 || true)
  if [ -z "$size" ]; then
    echo "screenshots.sh: could not measure $page at $width px; Chromium said:" >&2
    tail -5 "$scratch/chromium.log" >&2
    exit 1
  fi
  size=${size#SIZE=}
  page_width=${size%x*} height=${size#*x}
  # A page taller than this is a runaway (a table of thousands of rows); cut it rather than fail.
  [ "$height" -le 60000 ] || height=60000
  png=$out/${stem}_${width}.png
  frame "$scratch/shot.html" "file://$page" "$width" "$height"
  chrome --window-size="$window,$height" --screenshot="$png" "file://$scratch/shot.html" >/dev/null
  [ -s "$png" ] || { echo "screenshots.sh: Chromium wrote no $png" >&2; tail -5 "$scratch/chromium.log" >&2; exit 1; }
  note=""
  if [ "$window" -gt "$width" ] && ! crop "$png" "$width"; then
    note="  (neither Pillow nor ImageMagick to crop it: the page is the left $width px)"
  fi
  # Wider than the frame means something does not scroll inside its own box: the whole page scrolls sideways.
  [ "$page_width" -le "$width" ] || note="$note  (page is $page_width px wide: wider than the window)"
  echo "$png  ${width}x${height}$note"
done
