"""``python -m backend serve`` and ``python -m backend <op> IMAGE [--selection MASK] --out OUT ...``.

Op options are generated from the ops' ParamSpecs (the same schemas ``hello`` advertises), and an op runs
through ``backend.jobs.run_job``, the very function the server's workers call, so scripting without a host
exercises the real path. ``LAYEREDIT_REGISTRY=module:attr`` swaps in another registry (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.jobs import ModelsFactory, default_models, run_job
from backend.ops import JobContext, OpSpec, ParamSpec, Registry, product_registry
from backend.wire_images import array_buffer
from protocol.errors import ErrorCode, ProtocolError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def load_registry() -> Registry:
    """The product registry, or ``$LAYEREDIT_REGISTRY`` (``module:attr``, a Registry or a function making one)."""
    ref = os.environ.get("LAYEREDIT_REGISTRY")
    if not ref:
        return product_registry()
    module, _, attr = ref.partition(":")
    obj = getattr(importlib.import_module(module), attr or "registry")
    return obj() if callable(obj) and not isinstance(obj, Registry) else obj


# -- images on disk -------------------------------------------------------------------------------
def load_image(path: str | Path) -> np.ndarray:
    """HxWxC uint8/uint16/float32 in RGB(A) or gray order; 16-bit PNG/TIFF keep their depth and alpha."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(ErrorCode.MISSING_INPUT, f"No image file at {path}.")
    deep = _load_deep(path)
    if deep is not None:
        return deep
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return _pil_array(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"Cannot read {path} as an image ({exc}); use PNG, TIFF, JPEG or WebP.",
        ) from None


def _load_deep(path: Path) -> np.ndarray | None:
    """OpenCV for 16-bit / float files (Pillow reduces 16-bit RGB(A) to 8 bits); None for 8-bit images."""
    if path.suffix.lower() not in (".png", ".tif", ".tiff"):
        return None
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype == np.uint8:
        return None
    if arr.dtype not in (np.uint16, np.float32):
        arr = arr.astype(np.float32)
    if arr.ndim == 2:
        return arr[:, :, None]
    return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] >= 3 else arr)


def _pil_array(im: Any) -> np.ndarray:
    if im.mode in ("I;16", "I;16L", "I;16B"):
        return np.asarray(im, dtype=np.uint16)[:, :, None]
    if im.mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)[:, :, None]
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)[:, :, None]
    if im.mode == "L":
        return np.asarray(im, dtype=np.uint8)[:, :, None]
    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    return np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)


def load_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An 8-bit gray mask (0 not selected, 255 selected) the size of the image, as HxW uint8."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L"), dtype=np.uint8)
    except (FileNotFoundError, OSError) as exc:
        raise ProtocolError(ErrorCode.MISSING_INPUT, f"Cannot read the mask {path} ({exc}).") from None
    if (mask.shape[1], mask.shape[0]) != size:
        raise ProtocolError(
            ErrorCode.BAD_BUFFER,
            f"The mask {path} is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}; "
            "give a mask the size of the image.",
        )
    return mask


def save_image(arr: np.ndarray, path: str | Path) -> None:
    """Keep size, alpha and (where the format allows) bit depth: uint8 via Pillow, 16-bit/float via OpenCV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype == np.uint8:
        from PIL import Image

        mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
        Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode).save(path)
        return
    import cv2

    if arr.dtype != np.uint16 and path.suffix.lower() not in (".tif", ".tiff"):
        arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float32)) * 65535), 0, 65535).astype(np.uint16)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    out = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] >= 3 else arr[:, :, 0]
    if not cv2.imwrite(str(path), np.ascontiguousarray(out)):
        raise ProtocolError(ErrorCode.UNSUPPORTED_FORMAT, f"Cannot write {path}; use a .png or .tif name.")


# -- argument parsing from the schemas ------------------------------------------------------------
def option_name(param: ParamSpec) -> str:
    return "--" + param.name.replace("_", "-")


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, e.g. 0.5,0.6; got {text!r}"
        ) from None


def _param_help(p: ParamSpec) -> str:
    extra = [f"default: {p.default}"]
    if p.min is not None or p.max is not None:
        extra.append(f"range {p.min}..{p.max}")
    return f"{p.help} ({'; '.join(extra)})".replace("%", "%%")


def add_param_options(parser: argparse.ArgumentParser, spec: OpSpec) -> None:
    group = parser.add_argument_group(f"{spec.name} parameters")
    for p in spec.params:
        kwargs: dict[str, Any] = {"dest": f"param_{p.name}", "default": None, "help": _param_help(p)}
        if p.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif p.type == "int":
            kwargs["type"], kwargs["metavar"] = int, "N"
        elif p.type == "float":
            kwargs["type"], kwargs["metavar"] = float, "X"
        elif p.type == "str":
            kwargs["metavar"] = "TEXT"
        elif p.type == "enum":
            kwargs["choices"] = list(p.choices or ())
        elif p.type == "float_list":
            kwargs["type"] = _float_list
            kwargs["metavar"] = "X,Y,..."
        group.add_argument(option_name(p), **kwargs)


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    ops = "\n".join(f"  {s.name:<12} {s.help}" for s in registry.specs()) or "  (none registered)"
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="LayerEdit backend: serve the protocol, or run one op on image files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"ops:\n{ops}\n\n'python -m backend <op> --help' lists an op's parameters.",
    )
    commands = ["serve", "check", "schemas", "keys", *registry.names()]
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(commands) + "}")
    sub.add_parser(
        "check", help="say hello to a running backend and print its answer as JSON (--help: options)"
    )
    sub.add_parser(
        "schemas", help="print the ops' parameter schemas as JSON (the hosts build their forms from it)"
    )
    sub.add_parser(
        "keys", help="remote mode's keys: server-init, client-new, allow, revoke, list, show (--help)"
    )
    serve = sub.add_parser("serve", help="run the job server for the Krita/GIMP plugins")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only without CurveZMQ)")
    serve.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    serve.add_argument(
        "--device",
        action="append",
        help="device for a worker: auto, cpu, cuda, cuda:1, mps (repeatable; default: auto)",
    )
    serve.add_argument("--max-pixels", type=int, default=100_000_000, help="largest image, in pixels")
    serve.add_argument(
        "--max-message-mb",
        type=int,
        help="largest message (ZMQ_MAXMSGSIZE), MiB (default: what --max-pixels needs, 20 bytes a pixel)",
    )
    serve.add_argument(
        "--max-result-mb", type=int, default=1024, help="memory kept for unfetched results, MiB"
    )
    serve.add_argument("--max-queue", type=int, default=64, help="jobs waiting at most")
    serve.add_argument(
        "--max-queued-per-client",
        type=int,
        help="jobs one client may have waiting (default: 3/4 of --max-queue)",
    )
    serve.add_argument(
        "--max-result-mb-per-client",
        type=int,
        help="unfetched results one client may keep, MiB (default: half of --max-result-mb)",
    )
    serve.add_argument("--connection-file", type=Path, help="default: <runtime dir>/backend.json")
    serve.add_argument("--curve-secret-key", default=os.environ.get("LAYEREDIT_CURVE_SECRET"), help="Z85 key")
    serve.add_argument("--no-model-report", action="store_true", help="do not list installed models in hello")
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="remote mode: listen here with CurveZMQ, admitting the keys from 'python -m backend keys'",
    )
    serve.add_argument("--keys-dir", type=Path, help="remote mode keys (default: ~/.config/layeredit/server)")
    serve.add_argument(
        "--abandon-after",
        type=float,
        help="cancel jobs of a client silent this many seconds (default: never)",
    )
    serve.add_argument(
        "--result-ttl", type=float, default=3600.0, help="drop results not fetched within this many seconds"
    )
    warm = os.environ.get("LAYEREDIT_WARM_UP", "erase")
    serve.add_argument(
        "--warm-up",
        choices=WARM_UPS,
        default=warm if warm in WARM_UPS else "erase",
        help="what the backend prepares for the first erase while it waits for jobs: erase (kernels, U^2-Net, "
        "heap; ~0.4 GiB held), fill (the fill's kernels only) or off (default: $LAYEREDIT_WARM_UP or erase)",
    )
    serve.add_argument("--log-level", default="INFO")
    for spec in registry.specs():
        op = sub.add_parser(spec.name, help=spec.help, description=spec.help)
        op.add_argument("image", metavar="IMAGE", nargs=None if spec.needs_image else "?", help="input image")
        op.add_argument("--selection", metavar="MASK", help="8-bit gray mask, same size (255 = selected)")
        op.add_argument(
            "--out",
            metavar="OUT",
            required=True,
            help="result image (keeps size, alpha, depth); a mask-only op writes its mask here",
        )
        op.add_argument(
            "--mask-out",
            metavar="PNG",
            help="also write the snapped object mask (ops that do not snap: their mask)",
        )
        op.add_argument(
            "--region-out",
            metavar="PNG",
            help="also write the edited region: the mask the result was blended with (grown past the object: "
            "erase repaints its halo and fringe whole, replace feathers inward); every pixel outside it is "
            "unchanged",
        )
        op.add_argument("--device", help="cpu, cuda, mps (default: LAYEREDIT_DEVICE or the best available)")
        op.add_argument("--quiet", action="store_true", help="no progress on stderr")
        add_param_options(op, spec)
    return parser


# -- commands -------------------------------------------------------------------------------------
def main(
    argv: Sequence[str] | None = None,
    registry: Registry | None = None,
    models_factory: ModelsFactory | None = default_models,
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keys"]:  # remote mode's key management needs no registry (no torch import)
        from backend import keys

        return keys.main(argv[1:])
    if argv[:1] == ["check"]:  # a client of a running backend: the protocol's own hello check
        from protocol import launcher

        return launcher.check_main(argv[1:])
    registry = registry if registry is not None else load_registry()
    if argv[:1] == ["schemas"]:
        return print_schemas(registry)
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return serve(args, registry, models_factory)
        return run_op(args, registry.get(args.command).spec, registry, models_factory)
    except ProtocolError as exc:
        print(f"error [{exc.code.value}]: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def print_schemas(registry: Registry) -> int:
    """``python -m backend schemas``: every op's ``OpSpec.to_json`` as one JSON list on one line, asked by the GIMP
    plug-in and installer before any backend runs (GIMP registers its procedures' arguments from it)."""
    print(json.dumps([spec.to_json() for spec in registry.specs()]))
    return 0


def run_op(
    args: argparse.Namespace, spec: OpSpec, registry: Registry, models_factory: ModelsFactory | None
) -> int:
    params = {p.name: getattr(args, f"param_{p.name}") for p in spec.params}
    params = {k: v for k, v in params.items() if v is not None}
    image = selection = None
    if args.image:
        arr = load_image(args.image)
        image = array_buffer(arr, role="image")
        if args.selection:
            mask = load_mask(args.selection, (arr.shape[1], arr.shape[0]))
            selection = array_buffer(mask, role="selection")
    device = args.device or os.environ.get("LAYEREDIT_DEVICE") or "auto"
    ctx = JobContext(
        models=models_factory(device) if models_factory else None,
        progress_fn=None if args.quiet else _print_progress,
        device=device,
    )
    result, _, used = run_job(registry, spec.name, params, image, selection, ctx)
    if not args.quiet:
        print(file=sys.stderr)
    written = []
    if result.image is not None:
        save_image(result.image, args.out)
        written.append(str(args.out))
    elif result.mask is not None:  # a mask-only op (snap): the mask is the result
        save_image(np.asarray(result.mask, dtype=np.uint8), args.out)
        written.append(str(args.out))
    out = Path(args.out)
    for i, extra in enumerate(result.extra_images):
        path = out.with_name(f"{out.stem}.candidate{i}{out.suffix}")
        save_image(extra, path)
        written.append(str(path))
    snapped = result.object_mask if result.object_mask is not None else result.mask
    region = result.mask if (result.meta.get("masks") or [None])[0] == "region" else None
    if args.region_out and region is None:
        print(f"note: {spec.name} returns no edited region; --region-out not written", file=sys.stderr)
    for path, mask in ((args.mask_out, snapped), (args.region_out, region)):
        if path and mask is not None:
            save_image(np.asarray(mask, dtype=np.uint8), path)
            written.append(str(path))
    print(json.dumps({"written": written, "params": used, "meta": result.meta}, default=str))
    return 0


def _print_progress(stage: str, step: int, total: int, preview: Any = None) -> None:
    print(f"\r{stage}: {step}/{total}   ", end="", file=sys.stderr, flush=True)


def _remote_config(config: Any, listen: str, keys_dir: Path | None) -> None:
    """--listen: the server's persistent keys and the authorized-keys file (ConfigError says what to run)."""
    from backend import remote
    from backend.server import ConfigError

    try:
        config.host, config.port = remote.parse_listen(listen)
        directory = keys_dir or remote.keys_dir()
        keys = remote.load_server(directory)
    except remote.KeysError as exc:
        raise ConfigError(str(exc)) from None
    config.curve_secret_key, config.key = keys.secret, keys.hmac_key
    config.authorized_keys = directory / remote.AUTHORIZED_FILE


WARM_UPS = ("erase", "fill", "off")
WARM_JOIN_S = 60.0  # the longest a stop waits for the warm-up's current step


def _warm_up(level: str, stopping: threading.Event) -> None:
    """Prepare erase while the backend waits for its first job, so the user's first erase does not pay for it.

    ``erase`` (the default): ``backend.ops.erase.warm_up``, the fill's numba kernels, U^2-Net's session and its
    first runs, OpenCV's tables, the heap a 4096x4096 layer's erase needs (first erase of a 600 px object 2.43
    -> 1.81-1.86 s, docs/benchmarks/erase-fill-targets.md, day 7); ``fill``: the kernels only (compiled or
    loaded from numba's cache: a few seconds when nothing is cached); ``off``: nothing (the first erase pays)."""
    log = logging.getLogger("layeredit.server")
    try:
        if level == "fill":
            from backend.erase.patchmatch import warm_up as warm_fill

            log.info("erase fill kernels ready in %.2f s", warm_fill())
        elif level == "erase":
            from backend.ops.erase import warm_up

            seconds = warm_up(cancelled=stopping.is_set)
            log.info("erase %s in %.2f s", "warm-up cut short" if stopping.is_set() else "warmed up", seconds)
    except Exception as exc:  # the first erase pays for it instead
        log.warning("could not warm up erase: %s", exc)


def serve(args: argparse.Namespace, registry: Registry, models_factory: ModelsFactory | None) -> int:
    from backend import logs
    from backend.server import ConfigError, Server, ServerConfig

    logs.setup(args.log_level.upper())
    from backend import malloc

    logging.getLogger("layeredit.server").info("allocator: %s", malloc.status)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        devices=tuple(args.device or [os.environ.get("LAYEREDIT_DEVICE") or "auto"]),
        max_pixels=args.max_pixels,
        max_message_bytes=args.max_message_mb << 20 if args.max_message_mb else None,
        max_result_bytes=args.max_result_mb << 20,
        max_queue=args.max_queue,
        max_queued_per_client=args.max_queued_per_client,
        max_result_bytes_per_client=(args.max_result_mb_per_client or 0) << 20 or None,
        connection_file=args.connection_file,
        curve_secret_key=args.curve_secret_key,
        report_models=not args.no_model_report,
        abandon_after_s=args.abandon_after,
        result_ttl_s=args.result_ttl,
    )
    try:
        if args.listen:
            _remote_config(config, args.listen, args.keys_dir)
        server = Server(config, registry, models_factory)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        stopping.set()
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    warm = threading.Thread(
        target=_warm_up, args=(args.warm_up, stopping), name="layeredit-warm", daemon=True
    )
    warm.start()
    try:
        server.serve_forever()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        logging.getLogger("layeredit.server").info("interrupted")
    finally:
        stopping.set()  # the warm-up skips what is left; exiting while it runs inside onnxruntime aborts
        warm.join(WARM_JOIN_S)
    return 0
