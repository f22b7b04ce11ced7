# Runs inside gimp-console-3.0's python-fu-eval batch interpreter (GIMP's own Python, in the chroot).
# Builds the image a case describes, calls the INSTALLED plug-in through the PDB like a script would, and
# writes a JSON report plus raw pixel dumps (layers before/after, the new layer, the selection) to $LE_OUT.
import json
import os
import time
import traceback

from gi.repository import Gegl, Gimp

OUT = os.environ["LE_OUT"]
case = json.load(open(os.path.join(OUT, "case.json")))
report = {"case": case}


def dump(name, drawable, fmt, rect=None):
    if case.get("no_dumps"):
        return
    w, h = drawable.get_width(), drawable.get_height()
    r = rect or (0, 0, w, h)
    data = drawable.get_buffer().get(Gegl.Rectangle.new(*r), 1.0, fmt, Gegl.AbyssPolicy.NONE)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes(data))


def pattern(w, h, obj):
    """A smooth background with a solid object box: easy to erase, easy to check."""
    px = bytearray(w * h * 4)
    ox, oy, ow, oh = obj
    for y in range(h):
        for x in range(w):
            i = 4 * (y * w + x)
            if ox <= x < ox + ow and oy <= y < oy + oh:
                px[i : i + 4] = bytes((20, 30, 200, 255))
            else:
                px[i : i + 4] = bytes((120 + x % 50, 160 + y % 40, 90 + (x + y) % 30, 255))
    return bytes(px)


try:
    im = case["image"]
    precision = getattr(Gimp.Precision, im.get("precision", "U8_NON_LINEAR"))
    img = Gimp.Image.new_with_precision(im["width"], im["height"], Gimp.ImageBaseType.RGB, precision)
    lay = case["layer"]
    src = Gimp.Layer.new(
        img, "src", lay["width"], lay["height"], Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
    )
    img.insert_layer(src, None, 0)
    src.set_offsets(lay["x"], lay["y"])
    buf = src.get_buffer()
    if lay.get("pixels_file"):  # a photo: raw R'G'B'A u8 bytes the test wrote next to case.json
        pixels = open(os.path.join(OUT, lay["pixels_file"]), "rb").read()
    elif lay.get("fast_fill"):  # big layers (benchmarks): a byte ramp, no per-pixel Python
        n = lay["width"] * lay["height"] * 4
        pixels = (bytes(range(251)) * (n // 251 + 1))[:n]
    else:
        pixels = pattern(lay["width"], lay["height"], lay["object"])
    buf.set(Gegl.Rectangle.new(0, 0, lay["width"], lay["height"]), "R'G'B'A u8", pixels)
    buf.flush()
    sel = case.get("selection")
    if sel:
        if sel["shape"] == "mask":  # a drawn (lasso) selection: "Y u8" bytes over the whole image
            channel = img.get_selection()
            sbuf = channel.get_buffer()
            sbuf.set(
                Gegl.Rectangle.new(0, 0, im["width"], im["height"]),
                "Y u8",
                open(os.path.join(OUT, sel["file"]), "rb").read(),
            )
            sbuf.flush()
            channel.update(0, 0, im["width"], im["height"])
        elif sel["shape"] == "ellipse":
            img.select_ellipse(Gimp.ChannelOps.REPLACE, *sel["rect"])
        else:
            img.select_rectangle(Gimp.ChannelOps.REPLACE, *sel["rect"])
    fmt = case.get("dump_format", "R'G'B'A u8")
    dump("src_before.raw", src, fmt)
    dump("selection_before.raw", img.get_selection(), "Y u8")
    pdb = Gimp.get_pdb()
    proc = pdb.lookup_procedure(case["procedure"])
    report["procedure_found"] = proc is not None
    if proc is not None:
        report["arguments"] = [a.get_name() for a in proc.get_arguments()]
        cfg = proc.create_config()
        run_mode = Gimp.RunMode.INTERACTIVE if case.get("interactive") else Gimp.RunMode.NONINTERACTIVE
        cfg.set_property("run-mode", run_mode)
        cfg.set_property("image", img)
        cfg.set_core_object_array("drawables", [src])
        for name, value in case.get("args", {}).items():
            cfg.set_property(name, value)
        t0 = time.perf_counter()
        res = proc.run(cfg)
        report["proc_run_s"] = time.perf_counter() - t0
        report["status"] = res.index(0).value_nick
        report["error"] = pdb.get_last_error()
    report["layers"] = []
    for layer in img.get_layers():
        ok, x, y = layer.get_offsets()
        report["layers"].append(
            {
                "name": layer.get_name(),
                "x": x,
                "y": y,
                "width": layer.get_width(),
                "height": layer.get_height(),
            }
        )
    report["selected_layers"] = [layer.get_name() for layer in img.get_selected_layers()]
    dump("src_after.raw", src, fmt)
    dump("selection_after.raw", img.get_selection(), "Y u8")
    layers = img.get_layers()
    if len(layers) > 1:
        dump("new.raw", layers[0], fmt)
    report["undo_enabled"] = img.undo_is_enabled()
except Exception:
    report["driver_error"] = traceback.format_exc()
with open(os.path.join(OUT, "report.json"), "w") as f:
    json.dump(report, f, indent=1, default=str)
