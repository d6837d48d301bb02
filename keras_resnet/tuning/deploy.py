"""The deployable result of a search under a latency or file-size budget: the retrained best model
exported in the budget's mode, verified by the exporter, timed again and tested on the test split."""

import os

import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.export import CALIBRATION_COUNT, ExportError, predict, sidecar_path

VERIFY_IMAGES = 1000  # test images the exporter verifies the file on against Keras


def deploy_best(meter, best, folder, final, log=None):
    """Exports ``best.keras`` to ``best_<mode>.tflite`` (+ its JSON sidecar) with `meter`'s settings.

    The exporter's verification runs on `VERIFY_IMAGES` test images (with their labels); the int8
    calibration on `CALIBRATION_COUNT` training images. Returns ``{"file", "sidecar", "mode",
    "file_kb", "latency_ms", "test_accuracy", "keras_test_accuracy", "verification", ...}``, or
    ``{"error": ...}`` when the exporter refuses the file (nothing is written then).
    """
    mode = meter.budget.latency_mode
    path = os.path.join(folder, f"best_{mode}.tflite")
    info = final.info
    calibration = data_lib.calibration_images(final.x_train, info, count=CALIBRATION_COUNT)
    x_verify = data_lib.normalize(final.x_test[:VERIFY_IMAGES], info)
    try:
        sidecar = meter.convert(best["model"], path, calibration, verify_data=x_verify,
                                verify_labels=final.y_test[:VERIFY_IMAGES])
    except ExportError as e:
        if log:
            log(f"export of the best model in {mode} failed: {e}")
        return {"mode": mode, "error": str(e)}
    measured = meter.measure_file(path)
    top = predict(path, final.x_test, top=1)
    accuracy = float(np.mean([t[0][0] for t in top] == np.asarray(final.y_test)))
    result = {
        "file": path, "sidecar": str(sidecar_path(path)), "mode": mode,
        "file_kb": round(os.path.getsize(path) / 1024, 2), **measured, "threads": meter.budget.latency_threads,
        "test_accuracy": accuracy, "test_images": int(len(final.y_test)),
        "keras_test_accuracy": best["test_accuracy"], "verification": sidecar.get("verification"),
    }
    if log:
        log(f"deployed {path}: {result['file_kb']:.1f} KiB, {result['latency_ms']:.3g} ms per image, test "
            f"accuracy {accuracy:.4f} (Keras {best['test_accuracy']:.4f})")
    return result
