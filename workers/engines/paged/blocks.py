"""The paged KV block manager: which arena blocks each sequence holds. Pure Python, no torch.

The runner's KV arena is ``num_blocks`` blocks of ``block_size`` token slots each. A sequence
holds ``ceil(tokens / block_size)`` blocks in its block table; its token ``t`` lives in slot
``table[t // block_size] * block_size + t % block_size``. Freed blocks go back on the free
list at once. No prefix sharing (every block has one owner), so there are no reference counts.
"""

from __future__ import annotations

from collections.abc import Hashable


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``tokens`` token slots."""
    return -(-tokens // block_size)


class BlockManager:
    """A free list over ``num_blocks`` blocks and each sequence's block table."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks}, "
                             f"{block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free = list(range(num_blocks - 1, -1, -1))
        self.tables: dict[Hashable, list[int]] = {}

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def used_count(self) -> int:
        return sum(len(table) for table in self.tables.values())

    def can_hold(self, seq: Hashable, tokens: int) -> bool:
        """True when ``seq`` could grow (or start) to ``tokens`` slots with the free blocks."""
        held = len(self.tables.get(seq, ()))
        return blocks_for(tokens, self.block_size) - held <= len(self._free)

    def reserve(self, seq: Hashable, tokens: int) -> bool:
        """Grows ``seq``'s table to hold ``tokens`` slots; False (nothing taken) when short."""
        table = self.tables.setdefault(seq, [])
        missing = blocks_for(tokens, self.block_size) - len(table)
        if missing > len(self._free):
            if not table:
                del self.tables[seq]
            return False
        for _ in range(missing):
            table.append(self._free.pop())
        return True

    def reserve_all(self, wanted: list[tuple[Hashable, int]]) -> bool:
        """Grows every held table to its token count at once when the free blocks cover all of
        them; False (nothing taken) otherwise. A decode step's growth in one pass: most steps
        need no new block at all."""
        tables, size = self.tables, self.block_size
        growing = [(tables[seq], -(-tokens // size) - len(tables[seq])) for seq, tokens in wanted]
        growing = [(table, missing) for table, missing in growing if missing > 0]
        if sum(missing for _, missing in growing) > len(self._free):
            return False
        for table, missing in growing:
            for _ in range(missing):
                table.append(self._free.pop())
        return True

    def release(self, seq: Hashable) -> int:
        """Frees every block of ``seq`` (none held is fine); how many were freed."""
        table = self.tables.pop(seq, [])
        self._free.extend(reversed(table))
        return len(table)

    def slot(self, seq: Hashable, position: int) -> int:
        """The arena slot of token ``position`` of ``seq`` (its blocks must hold it)."""
        table = self.tables[seq]
        return table[position // self.block_size] * self.block_size + position % self.block_size
