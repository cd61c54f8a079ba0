"""flops.py, the FLOPS profiler CLI: its --imgsz follows the one rule of every entry point (deploy.imgsz)."""
from flops import check_opt, parse_opt


def test_imgsz_is_rounded_up_to_a_multiple_of_32_with_a_warning(log_lines):
    opt = parse_opt(["--imgsz", "65"])
    check_opt(opt)
    assert opt.imgsz == 96
    assert "WARNING: --imgsz 65 must be a multiple of max stride 32, updating to 96" in log_lines()
