"""The experiment harness behind ``backswap demo`` and ``benchmarks/``: NOT part of the library API.

* :mod:`.classifier` — the small CNN, the training loop (ERM / RandAugment / GroupDRO switches) and DFR;
* :mod:`.pipeline` — the StampBirds pipeline steps (splits, simulated patch labels, segmenter quality,
  masks, bank, train-and-evaluate, figures) shared by the demo and the benchmarks.

Nothing here is exported from :mod:`torch_backswap`; import it explicitly. Its interfaces may change
between releases without notice.
"""
