"""How each kind of entry becomes tasks: its store keys, its nodes, and what its coded result is.

A *chain* is the sweep's plan for one (picture, entry, rate point). Feature entries code the stored C-layers
and are detected from their reconstruction in a second task; image entries code the picture and detect on
the decoded picture in one. Both end in the same two records: a ``coded`` record (the entry's
:class:`~vcm_eval.methods.CodedResult`) and a ``detections`` record, which is all that
:mod:`vcm_eval.pipeline.results` reads. A new kind of entry (a sequence coder) registers a chain of its own
for its base class; nothing else in the pipeline changes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from vcm_eval.methods import CodedFeatures, CodedImage, CodedResult, CodingEntry, FeatureCodingMethod, ImageCodingMethod
from vcm_eval.pipeline import tasks
from vcm_eval.pipeline.graph import Node, Obj
from vcm_eval.pipeline.records import key
from vcm_eval.pipeline.worker import Runtime


@dataclass(frozen=True)
class Identities:
    """What every key of a sweep depends on besides the picture and the entry."""

    model: dict
    encoder: dict
    codec: dict


@dataclass(frozen=True)
class ChainKeys:
    """Store keys of one chain's two records."""

    coded: str
    detections: str


class Chain(abc.ABC):
    """The tasks of one kind of entry for one (picture, entry, rate point)."""

    #: the :class:`CodedResult` its ``coded`` records hold
    coded_type: type[CodedResult]
    #: whether it reads the picture's C-layers (and so waits for the extract task)
    reads_clayers: bool

    @abc.abstractmethod
    def keys(self, image: tasks.ImageRef, clayers_key: str, entry: CodingEntry, qp: int,
             ids: Identities) -> ChainKeys:
        """Keys that hash everything the two records depend on."""

    @abc.abstractmethod
    def nodes(self, rt: Runtime, image: tasks.ImageRef, clayers_key: str, entry: CodingEntry, qp: int,
              keys: ChainKeys, extract: Node, clayers: Obj) -> list[Node]:
        """The chain's tasks, dependencies first."""

    @abc.abstractmethod
    def task_keys(self, image_id: str, entry: CodingEntry, qp: int) -> list[str]:
        """Keys of the chain's nodes (their timings add up in the result row)."""

    def sender_network_s(self, uncompressed: dict) -> float:
        """Seconds of the model's encoder side the sender spent (the extract task's, for chains that code
        C-layers; none for the others)."""
        return uncompressed["nn_part_1_s"] if self.reads_clayers else 0.0


class FeatureChain(Chain):
    """Code the stored C-layers at the entry's split point; decode and detect in a second task."""

    coded_type = CodedFeatures
    reads_clayers = True

    def keys(self, image, clayers_key, entry, qp, ids) -> ChainKeys:
        coded = key("coded", clayers_key, entry.identity(), ids.codec, qp)
        return ChainKeys(coded, key("det", coded, ids.model))

    def nodes(self, rt, image, clayers_key, entry, qp, keys, extract, clayers) -> list[Node]:
        what = f"image {image.image_id} / {entry.name} / QP {qp}"
        code_key, detect_key = self.task_keys(image.image_id, entry, qp)
        code = Node(code_key, f"{what}: coding", tasks.code_features,
                    (rt, image.image_id, clayers_key, entry, qp, keys.coded),
                    [("coded", keys.coded, ".json")], [extract.key], reads=[clayers])
        # the detection task reads the C-layers too (top-down PSNR): it waits for them even when its coded
        # record is already stored
        detect = Node(detect_key, f"{what}: detection", tasks.detect_features,
                      (rt, image.image_id, clayers_key, keys.coded, entry, keys.detections),
                      [("detections", keys.detections, ".json")], [code.key, extract.key], reads=[clayers])
        return [code, detect]

    def task_keys(self, image_id, entry, qp) -> list[str]:
        return [f"code:{image_id}:{entry.name}:{qp}", f"detect:{image_id}:{entry.name}:{qp}"]


class ImageChain(Chain):
    """Code the picture, decode it and detect on it with the unsplit model, in one task."""

    coded_type = CodedImage
    reads_clayers = False

    def keys(self, image, clayers_key, entry, qp, ids) -> ChainKeys:
        coded = key("coded-image", image.fingerprint, entry.identity(), ids.codec, qp)
        return ChainKeys(coded, key("det", coded, ids.model))

    def nodes(self, rt, image, clayers_key, entry, qp, keys, extract, clayers) -> list[Node]:
        (task_key,) = self.task_keys(image.image_id, entry, qp)
        return [Node(task_key, f"image {image.image_id} / {entry.name} / QP {qp}", tasks.code_image,
                     (rt, image, entry, qp, keys.coded, keys.detections),
                     [("coded", keys.coded, ".json"), ("detections", keys.detections, ".json")])]

    def task_keys(self, image_id, entry, qp) -> list[str]:
        return [f"image:{image_id}:{entry.name}:{qp}"]


_CHAINS: dict[type, Chain] = {FeatureCodingMethod: FeatureChain(), ImageCodingMethod: ImageChain()}


def register_chain(base: type[CodingEntry], chain: Chain) -> None:
    """Plan entries of ``base`` (and its subclasses) with ``chain``."""
    _CHAINS[base] = chain


def chain_for(entry: CodingEntry) -> Chain:
    """The chain of the nearest base class of ``entry`` that has one.

    Raises:
        TypeError: ``entry`` derives from no class with a chain.
    """
    for klass in type(entry).__mro__:
        if klass in _CHAINS:
            return _CHAINS[klass]
    raise TypeError(f"entry {entry.name!r} ({type(entry).__name__}) is neither a FeatureCodingMethod nor an "
                    "ImageCodingMethod (vcm_eval.methods): the sweep does not know how to plan it")
