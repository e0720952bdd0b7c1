"""Spec -> nn.Module: the builder (shape inference), the network kinds, the inspector, KV-cache decoding."""

from ._builder import (
    COMPOSITES,
    NOTHING_TO_CHECKPOINT,
    Network,
    Parallel,
    Repeat,
    Residual,
    Serial,
    checkpoint_repeats,
    is_checkpointed,
)
from ._decode import KVCache, generate
from ._generative import GAN_BETAS, GENERATIVE_TASKS, GANNetwork, VAENetwork, generative_task
from ._generative import _eval as eval_mode  # the VAE and GAN tasks (archlab.train) use these two
from ._generative import _normal as normal_noise
from ._held import real_step_saved_bytes
from ._inspect import (
    OPTIMIZER_STATES,
    Inspection,
    count_params,
    group_by_kind,
    inspect,
)
from ._kinds import KINDS, NetworkKind, build, network_kind
from ._network import BuiltNetwork, LeafInfo, Node, Section, require_one_input
from ._seq2seq import BOS, EOS, PAD, Seq2SeqNetwork

__all__ = [
    "BOS",
    "BuiltNetwork",
    "COMPOSITES",
    "EOS",
    "GANNetwork",
    "GAN_BETAS",
    "GENERATIVE_TASKS",
    "Inspection",
    "KINDS",
    "KVCache",
    "LeafInfo",
    "Network",
    "NetworkKind",
    "Node",
    "OPTIMIZER_STATES",
    "PAD",
    "Parallel",
    "Repeat",
    "Residual",
    "Section",
    "Seq2SeqNetwork",
    "Serial",
    "VAENetwork",
    "build",
    "NOTHING_TO_CHECKPOINT",
    "checkpoint_repeats",
    "count_params",
    "generate",
    "eval_mode",
    "generative_task",
    "group_by_kind",
    "inspect",
    "is_checkpointed",
    "network_kind",
    "normal_noise",
    "real_step_saved_bytes",
    "require_one_input",
]
