"""
Synthetic labelled videos whose fakes differ from the reals only in temporal consistency.

Every frame is a smooth colour texture: a few random plane waves (sinusoids) of low spatial frequency. A real clip
pans one texture smoothly: its waves' phases drift at a constant velocity. A fake clip starts the same way, but every
`jump_every` frames all phases are drawn anew, as when a face swap loses track of identity: the texture keeps its
palette and frequencies while its layout jumps. Since a drifted uniform phase is still uniform, each frame on its own
is drawn from exactly the same distribution in both classes; only how consecutive frames relate tells them apart.

Smooth textures matter: with white noise, one pixel of motion already decorrelates the patches a ViT sees, and real
clips would look as unstable as fakes.

Videos are written with PyAV (its wheels bundle FFmpeg) by lossless x264 (crf 0): beyond the yuv420p colour conversion,
which treats every frame alike, no codec artifact depends on the motion, so compression does not give fakes away.
"""

import contextlib
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..configuration_dfd import CLASS_NAMES


# Folder names of the classes, in label order (0 = real, 1 = fake), as the detector's config names them.


@dataclass(frozen=True)
class TextureSettings:
    """
    size: frame height and width (even, for yuv420p). num_waves: sinusoids per texture. cycles: range of their
    spatial frequencies, in cycles per frame width (low = smooth). speed: range of the pan, in pixels per frame.
    jump_every: a fake clip redraws its phases every this many frames.
    """

    size: int = 32
    num_frames: int = 16
    num_waves: int = 6
    cycles: tuple[float, float] = (0.5, 2.0)
    speed: tuple[float, float] = (0.25, 0.75)
    jump_every: int = 1


def texture_clip(
    rng: np.random.Generator,
    fake: bool,
    settings: TextureSettings = TextureSettings(),
    fake_frames: tuple[int, int] | None = None,
) -> np.ndarray:
    """
    One clip, uint8 (num_frames, size, size, 3): a panning texture, or for a fake, one whose layout jumps.
    `fake_frames` (start, stop): a real clip whose frames in [start, stop) jump as a fake's do, a spliced video.
    """
    size, num_waves = settings.size, settings.num_waves
    radius = rng.uniform(*settings.cycles, num_waves)
    angle = rng.uniform(0, 2 * np.pi, num_waves)
    frequencies = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1) * 2 * np.pi / size  # (K, 2)
    colors = rng.normal(size=(num_waves, 3))
    # Scale set by the waves alone (never by a frame's content), so the brightness range is the same for both classes.
    scale = 90 / np.abs(colors).sum(axis=0).max()
    base_color = 128 + rng.uniform(-20, 20, 3)

    direction = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(*settings.speed) * np.array([np.cos(direction), np.sin(direction)])
    phase_step = frequencies @ velocity  # phase change per frame of each wave: a pan by `velocity` pixels
    coordinates = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="xy"), axis=-1)  # (H, W, 2): x, y
    spatial_phase = coordinates @ frequencies.T  # (H, W, K)

    phases = rng.uniform(0, 2 * np.pi, num_waves)
    frames = []
    for index in range(settings.num_frames):
        faked = fake or (fake_frames is not None and fake_frames[0] <= index < fake_frames[1])
        if faked and index > 0 and index % settings.jump_every == 0:
            phases = rng.uniform(0, 2 * np.pi, num_waves)
        waves = np.cos(spatial_phase + phases)  # (H, W, K)
        frames.append(base_color + scale * (waves @ colors))
        phases = phases - phase_step
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def keep_scheduling():
    """
    Give the calling thread back its scheduling policy: run as root, the SVT-AV1 encoder (libsvtav1) switches the
    thread that opens it to SCHED_FIFO at priority 99, which every thread and process started from it inherits, so a
    spinning OpenMP worker among them can starve the rest of a small machine for good.
    """
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    policy, priority = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (policy, priority):
            os.sched_setscheduler(0, policy, os.sched_param(priority))


def write_video(
    path,
    frames: Iterable[np.ndarray],
    fps: int = 25,
    codec: str = "libx264",
    gop: int | None = None,
    crf: int | None = None,
    bframes: int | None = None,
    rotation: int | None = None,
    container_options: dict | None = None,
    preset: str = "ultrafast",
    slice_threads: bool = True,
    options: dict | None = None,
) -> Path:
    """
    Encode uint8 RGB frames into a real video file with PyAV (the container follows the extension); returns the path.
    `frames`: an array (T, H, W, 3) or any iterable of (H, W, 3) arrays, e.g. a generator for a video too long to hold.

    crf: x264 quality; by default 0, lossless apart from the yuv420p conversion, so decoded pixels can be compared
    with what was written. bframes: B-frames per group, so presentation order differs from decode order. gop: frames
    from one keyframe to the next, exactly (no scene-cut keyframes). rotation: clockwise degrees a player turns the
    frames by, as in the `rotate` tag phones write (stored as a display matrix, which is what FFmpeg reads back).
    container_options: muxer options, e.g. {"movflags": "faststart"} to put the mp4 index first.
    preset: the x264 speed/quality preset. slice_threads: x264 cuts every frame into slices encoded in parallel
    (PyAV's default); False writes one slice per frame with frame threads, as the ffmpeg command line does, which
    changes how decoders can spread the work over threads.
    options: encoder options for the other codecs (crf and preset are x264's), e.g. libx265's or libvpx-vp9's.
    """
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    with keep_scheduling(), av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = np.shape(first)[:2]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            if crf is None:
                # Lossless x264 never emits B-frames, so asking for them switches to high-quality lossy coding.
                crf = 12 if bframes else 0
            x264_params = []
            if gop is not None:
                x264_params.append(f"keyint={gop}:min-keyint={gop}:scenecut=0")
            if bframes:
                x264_params.append(f"bframes={bframes}:b-adapt=0")
            stream.options = {"crf": str(crf), "preset": preset, "x264-params": ":".join(x264_params)}
            if not slice_threads:
                stream.codec_context.thread_type = "FRAME"
        elif options:
            stream.options = options
        if rotation is not None:
            # PyAV's angle is counter-clockwise (the value `VideoFrame.rotation` reads back).
            stream.set_display_rotation(-rotation)
        for array in itertools.chain([first], frames):
            array = np.ascontiguousarray(array, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return Path(path)


def write_dataset(
    root, videos_per_class: int, seed, settings: TextureSettings = TextureSettings(), fps: int = 8
) -> Path:
    """
    root/real/*.mp4 and root/fake/*.mp4 (the layout train_accelerate.py reads), `videos_per_class` of each. `seed`:
    anything `np.random.default_rng` takes, e.g. (seed, split index) for independent splits.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASS_NAMES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(videos_per_class):
            frames = texture_clip(rng, fake=bool(label), settings=settings)
            write_video(folder / f"{name}_{index:04d}.mp4", frames, fps)
    return root


# The face in scikit-image's `data.astronaut()` (a real photograph), x0, y0, x1, y1: brows to chin, cheek to cheek,
# marked by hand. The face-crop tests and benchmark paste it into videos.
ASTRONAUT_FACE_BOX = np.array([180.0, 72.0, 268.0, 170.0])
# The part of the photograph that is pasted: her head and shoulders.
_ASTRONAUT_HEAD = (slice(0, 260), slice(100, 360))


def grass_background(height: int, width: int) -> np.ndarray:
    """A (height, width, 3) textured background without a face: scikit-image's grass photograph, tiled and tinted."""
    from skimage import data

    grass = data.grass()
    tiles = np.tile(grass, (height // grass.shape[0] + 1, width // grass.shape[1] + 1))[:height, :width]
    return np.stack([tiles * 0.7, tiles, tiles * 0.5], axis=-1).astype(np.uint8)


def face_scene(
    height: int, width: int, centres, face_height: float, angle: float = 0.0, background: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """
    Frames (T, height, width, 3) of a real face, scikit-image's astronaut (the `dev` extra installs it), pasted on a
    textured background (its grass texture, or `background`: one (height, width, 3) frame or one per centre) with her
    face `face_height` pixels tall, turned `angle` degrees counter-clockwise, and centred at each of `centres` (x, y),
    moved inside the frame where it would stick out (her hair and shoulders may be cut by the frame's edges); and the
    true face box `x0, y0, x1, y1` of each frame (around the turned face).
    """
    import PIL.Image
    from skimage import data

    head = data.astronaut()[_ASTRONAUT_HEAD]
    face_box = ASTRONAUT_FACE_BOX - [_ASTRONAUT_HEAD[1].start, _ASTRONAUT_HEAD[0].start] * 2
    scale = face_height / (face_box[3] - face_box[1])
    size = (round(head.shape[1] * scale), round(head.shape[0] * scale))
    image = PIL.Image.fromarray(head).resize(size, PIL.Image.BICUBIC).convert("RGBA")
    face = face_box * scale
    if angle:
        # Turned about the image centre, which `expand` keeps at the centre of the larger image.
        image = image.rotate(angle, PIL.Image.BICUBIC, expand=True)
        corners = np.array([[face[0], face[1]], [face[2], face[1]], [face[0], face[3]], [face[2], face[3]]])
        centre = np.array(size) / 2
        radians = np.deg2rad(angle)
        turn = np.array([[np.cos(radians), np.sin(radians)], [-np.sin(radians), np.cos(radians)]])
        corners = (corners - centre) @ turn.T + np.array(image.size) / 2
        face = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
    pixels, alpha = np.asarray(image)[..., :3], np.asarray(image)[..., 3:] / 255
    if face[3] - face[1] > height or face[2] - face[0] > width:
        raise ValueError(f"a face {face_height} px tall does not fit in {width}x{height} frames")
    centres = list(centres)
    if background is None:
        background = grass_background(height, width)
    backgrounds = np.broadcast_to(background, (len(centres), height, width, 3))
    frames, boxes = [], []
    for (x, y), scenery in zip(centres, backgrounds):
        left = int(round(np.clip(x - (face[0] + face[2]) / 2, -face[0], width - face[2])))
        top = int(round(np.clip(y - (face[1] + face[3]) / 2, -face[1], height - face[3])))
        frame = scenery.copy()
        rows = slice(max(top, 0), min(top + pixels.shape[0], height))
        columns = slice(max(left, 0), min(left + pixels.shape[1], width))
        inside = (slice(rows.start - top, rows.stop - top), slice(columns.start - left, columns.stop - left))
        frame[rows, columns] = np.round(frame[rows, columns] * (1 - alpha[inside]) + pixels[inside] * alpha[inside])
        frames.append(frame)
        boxes.append(face + [left, top, left, top])
    return np.stack(frames), np.stack(boxes)


def frame_statistics(clips: np.ndarray) -> dict[str, float]:
    """
    For uint8 clips (N, T, H, W, 3): the mean over clips and frames of each frame's brightness and contrast (its own
    mean and std), which a frame-level model could see, and of the mean absolute change from one frame to the next,
    which only a model looking across frames can.
    """
    clips = np.asarray(clips, dtype=np.float32)
    return {
        "brightness": float(clips.mean(axis=(2, 3, 4)).mean()),
        "contrast": float(clips.std(axis=(2, 3, 4)).mean()),
        "frame_to_frame_change": float(np.abs(np.diff(clips, axis=1)).mean()),
    }


def manipulated_region_clip(
    rng: np.random.Generator, settings: TextureSettings = TextureSettings(), region_size: int = 16, cell: int = 8
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """
    A fake whose manipulated region is known: a real (panning) texture clip whose pixels flicker, brighter and darker
    in turn from frame to frame, inside one `region_size` square at a random place on a grid of `cell` pixels (a
    model's patch grid), and nowhere else. Returns the uint8 clip and the region as (top, left, size) in pixels, to
    check that an explanation points at it.
    """
    frames = texture_clip(rng, fake=False, settings=settings).astype(np.int16)
    top, left = rng.integers(0, (settings.size - region_size) // cell + 1, 2) * cell
    sign = rng.choice([-1, 1])
    for index in range(len(frames)):
        frames[index, top : top + region_size, left : left + region_size] += sign * (60 if index % 2 else -60)
    return np.clip(frames, 0, 255).astype(np.uint8), (int(top), int(left), region_size)
