"""faiss_index: the evaluation corpus embedded by the partition's checkpoint."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...indexing import build_index, gpu_available, recall_against_exact, save_index
from ...scoring import scoring_encoder
from ..evaluation_plan import evaluation_plan
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL


def build(exp: Experiment) -> list:
    """faiss_index of one experiment."""

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"faiss"}, partitions_def=exp.partitions,
           deps=exp.keys("encoder_checkpoint", "evaluation_set"), code_version=exp.code_version("faiss_index"), pool=ACCELERATOR_POOL,
           required_resource_keys={exp.resource_key})
    def faiss_index(context: AssetExecutionContext) -> MaterializeResult:
        """The scored evaluation corpus embedded by the partition's checkpoint, through the scoring
        path (its own length and prompts; the embeddings land in the model's store, where
        retrieval_scores finds them). Exact inner-product index by default (index_factory in the
        config for IVF/HNSW/PQ); on the GPU when faiss sees one. info.json records the checkpoint's
        content identity and the evaluation fingerprint: scoring refuses an index of other weights."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        plan = evaluation_plan(settings)
        corpus = plan.scored.corpus
        started = time.perf_counter()
        encoder = scoring_encoder(str(paths.checkpoint(scale)), paths.embeddings, config.evaluation, config.training.device,
                                  config.training.trust_remote_code, trained_top_layers=config.training.trainable_top_layers)
        prompt = encoder.prompts.get("document", "")
        embeddings = encoder.embed(corpus["text"].tolist(), prompt)
        encoder.store.save()  # retrieval_scores reads these vectors from the store
        encode_seconds = time.perf_counter() - started
        use_gpu = gpu_available()
        index = build_index(embeddings, config.index_factory, use_gpu=use_gpu)
        # An approximate index (IVF/HNSW/PQ) reports how much of the exact top-10 it still finds.
        probe = embeddings[:: max(1, len(embeddings) // 500)]
        recall_at_10 = 1.0 if config.index_factory == "Flat" else recall_against_exact(index, embeddings, probe, k=10)
        subsets = [f"{d}.{lang}" for d, lang in zip(corpus["domain"], corpus["language"])]
        save_index(index, corpus["doc_id"].tolist(), subsets, paths.index(scale), {
            "factory": config.index_factory, "dimension": int(embeddings.shape[1]), "size": int(index.ntotal),
            "checkpoint": str(paths.checkpoint(scale)), "model_identity": encoder.identity, "evaluation_fingerprint": plan.fingerprint,
            "max_length": encoder.max_length, "precision": encoder.precision, "document_prompt": prompt,
        })
        return MaterializeResult(metadata={
            "vectors": int(index.ntotal),
            "dimension": int(embeddings.shape[1]),
            "factory": config.index_factory,
            "gpu": use_gpu,
            "model_identity": encoder.identity,
            "evaluation_fingerprint": plan.fingerprint,
            "max_length": encoder.max_length,
            "recall_at_10_vs_exact": MetadataValue.float(recall_at_10),
            "texts_encoded": encoder.counts["encoded"],
            "texts_from_shared_layers": encoder.counts["from_shared_layers"],  # ran only the checkpoint's own top layers
            "passages_per_second": round(encoder.counts["encoded"] / max(encode_seconds, 1e-9), 1),
            "path": MetadataValue.path(str(paths.index(scale))),
        })

    return [faiss_index]
