"""Ordinal weak labels by hand: a local web page (``python -m depthadapt.annotate``) that saves WeSTAR's pairs.

The annotator sees one image at a time; per structured sample the tool proposes an anchor (or the annotator
places one) and the annotator clicks a farther and a closer point, giving three transitively consistent pairs,
as ``depthadapt.westar.ordinal.simulate_ordinal_pairs`` does from ground truth. Labels go to the JSON Lines file that
``data.weak_labels.ordinal_file`` reads, saved as they are made.
"""

from depthadapt.annotate.server import AnnotationSession, create_app, open_session, serve
from depthadapt.annotate.store import LabelConflictError, LabelStore

__all__ = ["AnnotationSession", "LabelConflictError", "LabelStore", "create_app", "open_session", "serve"]
