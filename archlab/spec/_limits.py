"""The limits every spec is held to. Specs are untrusted data: each limit turns an input that
would hang the process, overflow a size or exhaust memory into a one-line SpecError.

Each is far beyond any real model; together they bound the time and memory of parsing,
building and inspecting a spec.

=====================  ==================  =================================================
limit                  value               checked
=====================  ==================  =================================================
MAX_SPEC_BYTES         1 MiB               a spec file or YAML text, before it is parsed
MAX_SPEC_VALUES        200,000             values (mappings, lists, scalars) once YAML
                                           aliases are expanded, before the spec is frozen
MAX_DEPTH              100                 nesting of spec data, and of blocks while building
MAX_LAYERS             20,000              leaf layers (lists at parse time, repeats and
                                           blocks expanded at build time)
MAX_INT                2**64               any integer in the spec data (YAML, dict or --set)
MAX_EXPR_BITS          4,096               any integer inside a ``${...}`` expression
MAX_SIZE               2**48               a layer argument or one dimension of a shape
MAX_VALUES_PER_SAMPLE  2**40               values in one sample of any layer's output
MAX_TENSOR_VALUES      2**36               values in one weight tensor (275 GB in fp32)
=====================  ==================  =================================================

The layers check MAX_SIZE and MAX_VALUES_PER_SAMPLE as they infer shapes; the builder
checks MAX_TENSOR_VALUES before PyTorch allocates a weight, on every device.
"""

from __future__ import annotations

MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_VALUES = 200_000
MAX_DEPTH = 100
MAX_LAYERS = 20_000
MAX_INT = 2**64
MAX_EXPR_BITS = 4096
# No size, argument or dimension may exceed this: far above any real model, and far enough
# below 2**63 that PyTorch never sees a number it cannot hold.
MAX_SIZE = 2**48
# Nor may one sample of any layer's output hold more values than this: a product of dims
# within MAX_SIZE can still overflow PyTorch's 64-bit storage sizes ([1, 1e11, 1e11]).
MAX_VALUES_PER_SAMPLE = 2**40
# Nor one weight tensor: `linear: 100000000000` is refused before anything is allocated.
MAX_TENSOR_VALUES = 2**36

LIMITS = {name: value for name, value in globals().items() if name.startswith("MAX_")}
