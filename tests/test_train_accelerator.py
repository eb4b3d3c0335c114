"""The mixed precision a run picks, and why: the flag, then the launcher's setting, then bf16 where it is native."""

import pytest

from dfd.tools.train.accelerator import choose_mixed_precision


@pytest.mark.parametrize(
    "requested, environ, expected",
    [
        (None, {}, "no"),  # a CPU: fp32, not the card's bf16
        (None, {"ACCELERATE_MIXED_PRECISION": "no"}, "no"),  # what `accelerate launch` sets when nothing is configured
        (None, {"ACCELERATE_MIXED_PRECISION": "fp16"}, "fp16"),  # accelerate launch --mixed_precision / its config
        ("bf16", {}, "bf16"),
        ("no", {"ACCELERATE_MIXED_PRECISION": "bf16"}, "no"),  # the script's own flag wins
    ],
)
def test_mixed_precision_choice_on_cpu(requested, environ, expected):
    chosen, reason = choose_mixed_precision(requested, "cpu", environ)
    assert chosen == expected
    if requested is None and expected == "no":
        assert reason.startswith("default on CPU: ") and "--mixed_precision bf16" in reason
