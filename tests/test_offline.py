"""Nothing of ours touches the network: train, val, detect and an OpenVINO int8 export run under an audit hook
that stops the process on the first DNS lookup, connect or send (ultralytics, imported for plotting, checks
whether it is online unless told it is offline; OpenVINO's converter and nncf send usage telemetry)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

AUDITED = textwrap.dedent("""
    import os, sys

    NETWORK_EVENTS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                      "socket.gethostbyaddr", "socket.connect", "socket.sendto", "socket.sendmsg"}

    def no_network(event, args):
        if event in NETWORK_EVENTS:
            os.write(2, f"NETWORK ACCESS: {event} {args!r}\\n".encode())
            os._exit(3)

    sys.addaudithook(no_network)
    root, project = sys.argv[1:]
    sys.path.insert(0, root)
    import detect, train, val

    summary = train.run(data="data/coco8.yaml", cfg="models/yolov5n-faster.yaml", imgsz=64, batch_size=4,
                        epochs=1, workers=0, project=project, name="train")
    best = summary.save_dir / "weights" / "best.pt"
    val.run(data="data/coco8.yaml", weights=str(best), imgsz=64, batch_size=4, workers=0, plots=True,
            project=project, name="val")
    detect.run(weights=str(best), source="data/images", imgsz=64, project=project, name="detect")
    import export  # OpenVINO's converter and nncf would send usage telemetry
    export.run(weights=str(best), include=["openvino"], int8=True, data="data/coco8.yaml", imgsz=[64],
               verify=False)
    assert "ultralytics" in sys.modules, "the run never imported ultralytics: the hook proved nothing"
    print("OFFLINE OK")
""")


def test_train_val_detect_export_never_touch_the_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "YOLO_OFFLINE"}  # as a user's shell has it
    env.update(OMP_NUM_THREADS="1", YOLO_CONFIG_DIR=str(tmp_path / "ultralytics-settings"))
    proc = subprocess.run([sys.executable, "-c", AUDITED, str(ROOT), str(tmp_path / "runs")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "NETWORK ACCESS" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OFFLINE OK" in proc.stdout
