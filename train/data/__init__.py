"""Training data: typed samples, CMRxRecon / ISMRMRD / synthetic sources, on-the-fly undersampling.

Submodules (import them directly; ``ismrmrd_raw`` pulls in the gadget code and ismrmrd):

- ``train.data.sample``: KspaceSample, TrainingExample, TrainingBatch, collate_examples, rss_target
- ``train.data.sources``: build_source / concat_sources (the data sets of a config's sources), describe_sources
- ``train.data.cmrxrecon``: CMRxReconDataset and the challenge file readers
- ``train.data.cmrxrecon_paths``: what a CMRxRecon path says; find_full_sample_files
- ``train.data.synthetic``: SyntheticCardiacDataset (phantoms on the fly)
- ``train.data.ismrmrd_raw``: IsmrmrdRawDataset (fully sampled ISMRMRD raw files)
- ``train.data.undersample``: UndersamplingSpec, UndersampledDataset
- ``train.data.skipping``: SkipUnreadable, the skip-unreadable-files mixin of the file-backed data sets
"""

from .sample import KspaceSample, TrainingBatch, TrainingExample, collate_examples, rss_target

__all__ = ["KspaceSample", "TrainingBatch", "TrainingExample", "collate_examples", "rss_target"]
