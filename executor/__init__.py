"""The executor: a real TGN trained by a schedule on torch.distributed.

Not built yet: see the executor issue.
"""

__all__: list[str] = []
