"""Pair miners: the :class:`PairMiner` contract, built-ins and the PML adapter."""

from siamkit.miners.base import (
    PairIndices,
    PairMiner,
    PMLPairMiner,
    as_pair_miner,
    create_miner,
    list_miners,
    miner_registry,
    register_miner,
)
from siamkit.miners.builtin import (
    AllPairsMiner,
    BatchHardPairMiner,
    HardPairMiner,
    RandomPairMiner,
    all_pairs,
    pair_masks,
)

__all__ = [
    "AllPairsMiner",
    "BatchHardPairMiner",
    "HardPairMiner",
    "PMLPairMiner",
    "PairIndices",
    "PairMiner",
    "RandomPairMiner",
    "all_pairs",
    "as_pair_miner",
    "create_miner",
    "list_miners",
    "miner_registry",
    "pair_masks",
    "register_miner",
]
