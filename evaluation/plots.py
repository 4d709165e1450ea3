"""Small PNG bar charts for the offline-evaluation report, without a hard dependency.

matplotlib is used when it is installed; otherwise a minimal Pillow renderer
(Pillow comes with the TFX/TensorBoard stack) draws the same horizontal grouped
bars; with neither, no plot is drawn and the report keeps its tables.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Sequence, Tuple

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def renderer() -> Optional[str]:
    if importlib.util.find_spec("matplotlib") is not None:
        return "matplotlib"
    if importlib.util.find_spec("PIL") is not None:
        return "Pillow"
    return None


def grouped_bars(path, title: str, bars: Sequence[Tuple], series: Sequence[str]) -> bool:
    """Horizontal bars: ``bars`` = [(label, value of series 0, value of series 1 or None)].
    Returns False when nothing could be drawn."""
    if not bars:
        return False
    kind = renderer()
    if kind == "matplotlib":
        _matplotlib(Path(path), title, bars, series)
        return True
    if kind == "Pillow":
        _pillow(Path(path), title, bars, series)
        return True
    return False


def _values(bars, series):
    return [[(b[1 + s] if len(b) > 1 + s and b[1 + s] is not None else None)
             for s in range(len(series))] for b in bars]


def _matplotlib(path: Path, title, bars, series) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    values = _values(bars, series)
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(bars) * len(series) + 1.2))
    for s, name in enumerate(series):
        ys = [i + s * height for i in range(len(bars))]
        ax.barh(ys, [v[s] or 0.0 for v in values], height=height, label=name,
                color=[c / 255 for c in COLOURS[s % len(COLOURS)]])
    ax.set_yticks([i + height * (len(series) - 1) / 2 for i in range(len(bars))])
    ax.set_yticklabels([b[0] for b in bars])
    ax.invert_yaxis()
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pillow(path: Path, title, bars, series) -> None:
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default()
    values = _values(bars, series)
    top = max([v for row in values for v in row if v is not None] + [1e-9])
    label_w, bar_w, row_h, pad = 190, 420, 14, 28
    group_h = row_h * len(series) + 6
    width = label_w + bar_w + 80
    height = pad * 2 + 18 * len(series) + group_h * len(bars)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=font)
    y = pad
    for s, name in enumerate(series):  # legend
        draw.rectangle([label_w, y + 2, label_w + 10, y + 12], fill=COLOURS[s % len(COLOURS)])
        draw.text((label_w + 16, y), name, fill="black", font=font)
        y += 18
    for (label, *_), row in zip(bars, values):
        draw.text((10, y + (group_h - 12) // 2), str(label)[:30], fill="black", font=font)
        for s, value in enumerate(row):
            if value is None:
                continue
            x1 = label_w + int(bar_w * value / top)
            top_y = y + s * row_h
            draw.rectangle([label_w, top_y, max(label_w + 1, x1), top_y + row_h - 2],
                           fill=COLOURS[s % len(COLOURS)])
            draw.text((x1 + 4, top_y), f"{value:.4f}", fill="black", font=font)
        y += group_h
    draw.line([label_w, pad, label_w, height - pad // 2], fill="grey")
    image.save(path)
