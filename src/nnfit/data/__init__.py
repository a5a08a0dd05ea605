"""The data pipeline, in stages: read a file or frame into columns (:mod:`.read`,
:mod:`.columns`), give each column a role (:mod:`.schema`), split (:mod:`.split`), fit the
preprocessing on the training split (:mod:`.preprocess`), and serve batches (:mod:`.sources`).
:func:`.prepare.prepare` is the one entry that ``nnfit.fit`` and ``nnfit train`` call.
"""

from .sources import Batch, DataSource, Inputs, LoaderData, StreamData, TensorData, as_source, first_input
from .split import split_indices

__all__ = ["Batch", "DataSource", "Inputs", "LoaderData", "StreamData", "TensorData", "as_source",
           "first_input", "split_indices"]
