"""Shared by several test folders."""

from __future__ import annotations

import io
import wave

from PIL import Image


def png(color: tuple[int, int, int], size: tuple[int, int] = (90, 60)) -> bytes:
    buffer = io.BytesIO()
    picture = Image.new("RGB", size, color)
    picture.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, size[0] // 2, size[1] // 3))
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def wav(freq: float, seconds: float = 1.0, rate: int = 16000, width: int = 2, channels: int = 1) -> bytes:
    """A sine tone as a PCM WAV file (8-bit unsigned, 16/24/32-bit signed)."""
    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    scale = float(1 << (8 * width - 1)) - 1
    if width == 1:
        raw = (tone * 127 + 128).astype(np.uint8).tobytes()
        samples = [raw[i : i + 1] for i in range(len(raw))]
    else:
        values = (tone * scale).astype(np.int64)
        samples = [int(v).to_bytes(width, "little", signed=True) for v in values]
    frames = b"".join(s * channels for s in samples)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def mp4(colors: list[tuple[int, int, int]], fps: int = 10, size: tuple[int, int] = (64, 48)) -> bytes:
    """An H.264 MP4 with one frame per colour (a moving bar makes frames differ within a colour)."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i, color in enumerate(colors):
            frame = np.zeros((size[1], size[0], 3), np.uint8)
            frame[:, :] = color
            frame[:, (i * 3) % size[0] : (i * 3) % size[0] + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
