"""The paged, continuously batching torch engine (registry engine name ``paged``).

``scheduler`` (pure) decides each step who prefills, decodes or is preempted; ``blocks``
(pure) keeps the KV arena's block tables; ``runner`` (the only torch file) holds the arena and
runs our own GPT-2/Llama forward over it; ``core`` is the step loop over the three, and
``engine`` the ``Engine`` that serves jobs with it from its own thread.
"""
