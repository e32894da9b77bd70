"""Training data: typed samples, CMRxRecon / ISMRMRD / synthetic sources, on-the-fly undersampling.

Submodules (import them directly; ``ismrmrd_raw`` pulls in the gadget code and ismrmrd):

- ``train.data.sample``: KspaceSample, TrainingExample, TrainingBatch, collate_examples, rss_target
- ``train.data.cmrxrecon``: CMRxReconDataset and the challenge file readers
- ``train.data.synthetic``: SyntheticCardiacDataset (phantoms on the fly)
- ``train.data.ismrmrd_raw``: IsmrmrdRawDataset (fully sampled ISMRMRD raw files)
- ``train.data.undersample``: UndersamplingSpec, UndersampledDataset
"""

from .sample import KspaceSample, TrainingBatch, TrainingExample, collate_examples, rss_target

__all__ = ["KspaceSample", "TrainingBatch", "TrainingExample", "collate_examples", "rss_target"]
