"""Stand-in for sglang.srt.utils.custom_op: no torch custom-op registration (eager calls only)."""


def register_custom_op(fn=None, **_kwargs):
    if fn is None:
        return lambda f: f
    return fn
