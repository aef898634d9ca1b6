"""A loss-curve PNG drawn with Pillow alone: raw loss faint, smoothed loss bold, validation loss as dots."""

from __future__ import annotations

import io
import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from easytrain.fsutil import atomic_write_bytes

WIDTH, HEIGHT = 1200, 675
SCALE = 2                                   # drawn at twice the size, then downsampled: smooth lines
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 30, 64, 64
BACKGROUND = (255, 255, 255)
GRID = (232, 232, 232)
AXIS = (90, 90, 90)
TEXT = (40, 40, 40)
RAW = (178, 206, 236)
SMOOTH = (24, 86, 170)
VALIDATION = (226, 110, 20)


def smooth(values: Sequence[float]) -> list[float]:
    """Exponential moving average, debiased at the start; the span grows with the run."""
    span = max(4.0, len(values) / 25)
    weight = 2.0 / (span + 1.0)
    average = 0.0
    weight_sum = 0.0
    out = []
    for v in values:
        average = (1 - weight) * average + weight * v
        weight_sum = (1 - weight) * weight_sum + weight
        out.append(average / weight_sum)
    return out


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering low..high."""
    if high <= low:
        return [low]
    raw_step = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_step)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    if len(ticks) > 1:
        step = abs(ticks[1] - ticks[0])
        decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    else:
        decimals = 4
    return f"{value:.{decimals}f}"


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                        # Pillow < 10.1: only the small bitmap font
        return ImageFont.load_default()


def render_loss_png(steps: Sequence[int], losses: Sequence[float], title: str,
                    validation: Sequence[tuple[int, float]] = ()) -> bytes:
    """PNG bytes of the loss curve; non-finite losses are left out.

    ``validation`` is (step, validation loss) pairs, drawn as a line of dots.
    """
    points = [(s, v) for s, v in zip(steps, losses) if math.isfinite(v)]
    checked = sorted((step, v) for step, v in validation if math.isfinite(v))
    s = SCALE
    image = Image.new("RGB", (WIDTH * s, HEIGHT * s), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, label_font = _font(22 * s), _font(15 * s)
    left, top = MARGIN_LEFT * s, MARGIN_TOP * s
    right, bottom = (WIDTH - MARGIN_RIGHT) * s, (HEIGHT - MARGIN_BOTTOM) * s
    draw.text((left, 20 * s), title, fill=TEXT, font=title_font)

    if not points:
        draw.text((left, top + 20 * s), "no loss values recorded", fill=AXIS, font=label_font)
        return _png(image)

    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    smoothed = smooth(ys)
    ordered = sorted(ys)
    y_low = min([_percentile(ordered, 0.01), min(smoothed), *(v for _, v in checked)])
    y_high = max([_percentile(ordered, 0.99), max(smoothed), *(v for _, v in checked)])
    pad = (y_high - y_low) * 0.06 or (abs(y_high) * 0.1 or 1.0)
    y_low, y_high = y_low - pad, y_high + pad
    if min(ys) >= 0:
        y_low = max(0.0, y_low)
    x_low = min([xs[0], *(x for x, _ in checked)])
    x_high = max([xs[-1], *(x for x, _ in checked)])
    if x_high <= x_low:
        x_low, x_high = x_low - 1, x_high + 1

    def px(step: float) -> float:
        return left + (step - x_low) / (x_high - x_low) * (right - left)

    def py(value: float) -> float:
        value = min(max(value, y_low), y_high)
        return bottom - (value - y_low) / (y_high - y_low) * (bottom - top)

    y_ticks = [t for t in nice_ticks(y_low, y_high) if y_low <= t <= y_high]
    for tick in y_ticks:
        y = py(tick)
        draw.line([(left, y), (right, y)], fill=GRID, width=s)
        label = _tick_label(tick, y_ticks)
        width = draw.textlength(label, font=label_font)
        draw.text((left - 10 * s - width, y - 9 * s), label, fill=TEXT, font=label_font)
    x_ticks = [t for t in nice_ticks(x_low, x_high, 6) if x_low <= t <= x_high and float(t).is_integer()]
    for tick in x_ticks:
        x = px(tick)
        draw.line([(x, top), (x, bottom)], fill=GRID, width=s)
        label = str(int(tick))
        width = draw.textlength(label, font=label_font)
        draw.text((x - width / 2, bottom + 8 * s), label, fill=TEXT, font=label_font)

    _draw_raw(draw, xs, ys, px, py, right - left)
    draw.line([(px(x), py(y)) for x, y in _one_per_column(xs, smoothed, px)], fill=SMOOTH,
              width=3 * s, joint="curve")
    _draw_validation(draw, checked, px, py)

    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS, width=s)
    draw.text(((left + right) / 2 - 15 * s, bottom + 32 * s), "step", fill=AXIS, font=label_font)
    draw.text((14 * s, top - 26 * s), "loss", fill=AXIS, font=label_font)
    _legend(draw, right, top, label_font, with_validation=bool(checked))
    return _png(image)


def _draw_raw(draw, xs, ys, px, py, plot_width: float) -> None:
    if len(xs) <= plot_width / SCALE:
        if len(xs) > 1:
            draw.line([(px(x), py(y)) for x, y in zip(xs, ys)], fill=RAW, width=SCALE)
        else:
            x, y = px(xs[0]), py(ys[0])
            draw.ellipse([x - 3 * SCALE, y - 3 * SCALE, x + 3 * SCALE, y + 3 * SCALE], fill=RAW)
        return
    # Many more points than pixels: draw each pixel column's min..max as a faint band.
    columns: dict[int, list[float]] = {}
    for x, y in zip(xs, ys):
        column = int(px(x)) // SCALE
        span = columns.get(column)
        if span is None:
            columns[column] = [y, y]
        else:
            span[0] = min(span[0], y)
            span[1] = max(span[1], y)
    for column, (low, high) in columns.items():
        x = column * SCALE
        draw.line([(x, py(low)), (x, py(high))], fill=RAW, width=SCALE)


def _draw_validation(draw, checked, px, py) -> None:
    if len(checked) > 1:
        draw.line([(px(x), py(y)) for x, y in checked], fill=VALIDATION, width=2 * SCALE)
    radius = 4 * SCALE
    for x, y in checked:
        cx, cy = px(x), py(y)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=VALIDATION)


def _one_per_column(xs, values, px) -> list[tuple[float, float]]:
    """Thin a long series to the last point in each pixel column."""
    thinned: dict[int, tuple[float, float]] = {}
    for x, v in zip(xs, values):
        thinned[int(px(x)) // SCALE] = (x, v)
    out = list(thinned.values())
    return out if len(out) > 1 else out * 2


def _legend(draw, right: float, top: float, font, with_validation: bool = False) -> None:
    s = SCALE
    x = right - (400 if with_validation else 250) * s
    y = top - 30 * s
    draw.line([(x, y + 9 * s), (x + 28 * s, y + 9 * s)], fill=RAW, width=2 * s)
    draw.text((x + 36 * s, y), "raw", fill=TEXT, font=font)
    x += 90 * s
    draw.line([(x, y + 9 * s), (x + 28 * s, y + 9 * s)], fill=SMOOTH, width=3 * s)
    draw.text((x + 36 * s, y), "smoothed", fill=TEXT, font=font)
    if with_validation:
        x += 140 * s
        draw.line([(x, y + 9 * s), (x + 28 * s, y + 9 * s)], fill=VALIDATION, width=2 * s)
        draw.ellipse([x + 10 * s, y + 5 * s, x + 18 * s, y + 13 * s], fill=VALIDATION)
        draw.text((x + 36 * s, y), "validation", fill=TEXT, font=font)


def _png(image: Image.Image) -> bytes:
    image = image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_loss_png(path, steps: Sequence[int], losses: Sequence[float], title: str,
                   validation: Sequence[tuple[int, float]] = ()) -> None:
    atomic_write_bytes(path, render_loss_png(steps, losses, title, validation))
