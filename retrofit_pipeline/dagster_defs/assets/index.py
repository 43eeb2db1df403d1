"""faiss_index: the evaluation corpus embedded by the partition's checkpoint."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ...encoder import encode_texts, load_encoder
from ...evaluation import subset_name
from ...indexing import build_index, gpu_available, recall_against_exact, save_index
from ..experiment import Experiment
from ..pools import ACCELERATOR_POOL
from .data import scored_evaluation


def build(exp: Experiment) -> list:
    """faiss_index of one experiment."""

    @asset(key_prefix=exp.prefix, group_name=exp.group("evaluation"), kinds={"faiss"}, partitions_def=exp.partitions,
           deps=exp.keys("encoder_checkpoint", "evaluation_set"), code_version=exp.code_version("faiss_index"), pool=ACCELERATOR_POOL,
           required_resource_keys={exp.resource_key})
    def faiss_index(context: AssetExecutionContext) -> MaterializeResult:
        """The scored evaluation corpus (evaluation_set, sampled as configured) embedded by the
        partition's checkpoint. Exact inner-product index by default (index_factory in the config for IVF/HNSW/PQ); on the GPU when faiss sees one."""
        settings = exp.settings(context)
        config, paths = settings.pipeline(), settings.paths()
        scale = context.partition_key
        evaluation = scored_evaluation(settings)
        model = load_encoder(str(paths.checkpoint(scale)), device=config.training.device, max_length=config.training.max_passage_length)
        started = time.perf_counter()
        embeddings = encode_texts(model, evaluation.corpus["text"].tolist(), config.training.passage_prefix,
                                  config.encode_batch_size, config.training.max_passage_length, description="encode evaluation corpus")
        encode_seconds = time.perf_counter() - started
        use_gpu = gpu_available()
        index = build_index(embeddings, config.index_factory, use_gpu=use_gpu)
        # An approximate index (IVF/HNSW/PQ) reports how much of the exact top-10 it still finds.
        probe = embeddings[:: max(1, len(embeddings) // 500)]
        recall_at_10 = 1.0 if config.index_factory == "Flat" else recall_against_exact(index, embeddings, probe, k=10)
        subsets = [subset_name(d, lang) for d, lang in zip(evaluation.corpus["domain"], evaluation.corpus["language"])]
        save_index(index, evaluation.corpus["doc_id"].tolist(), subsets, paths.index(scale), {
            "factory": config.index_factory, "dimension": int(embeddings.shape[1]), "size": int(index.ntotal),
            "checkpoint": str(paths.checkpoint(scale)), "passage_prefix": config.training.passage_prefix,
        }, embeddings=embeddings)
        return MaterializeResult(metadata={
            "vectors": int(index.ntotal),
            "dimension": int(embeddings.shape[1]),
            "factory": config.index_factory,
            "gpu": use_gpu,
            "recall_at_10_vs_exact": MetadataValue.float(recall_at_10),
            "passages_per_second": round(len(embeddings) / max(encode_seconds, 1e-9), 1),
            "path": MetadataValue.path(str(paths.index(scale))),
        })

    return [faiss_index]
