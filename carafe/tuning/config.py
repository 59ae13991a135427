"""Config of the tuning package: teacher, generation, filters, LoRA phases, eval gate."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TeacherConfig(BaseModel):
    """Which model writes the synthetic data."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server (vLLM, a Carafe gateway), e.g. http://host:8000/v1 "
        "(the production path: a large teacher); None or `offline`: the built-in offline generator (facts, "
        "question forms, paraphrases, RAFT; no model); `local`: the embedded base model (slow, weak)",
    )
    model: str = Field("teacher", description="Model name sent to the endpoint")
    api_key: str | None = Field(None, description="Bearer key for the endpoint (secret)")
    concurrency: int = Field(4, ge=1, le=256, description="Most teacher requests in flight at once")
    retries: int = Field(3, ge=0, le=20, description="Retries per request on errors or junk answers")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of generation calls")
    max_tokens: int = Field(256, ge=16, description="Largest teacher answer")


class GenerationConfig(BaseModel):
    """How many samples to ask for."""

    model_config = ConfigDict(extra="forbid")

    chunk_words: int = Field(60, ge=20, description="Knowledge documents are cut into chunks of about this many words")
    qa_per_chunk: int = Field(6, ge=1, description="Question/answer pairs asked per knowledge chunk")
    instructions_per_seed: int = Field(10, ge=1, description="New instructions asked per skill seed example")
    raft_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of knowledge samples that also get a RAFT copy: the question with numbered passages "
        "(gold + distractors) in the gateway's prompt format",
    )
    raft_distractors: int = Field(1, ge=0, le=8, description="Distractor passages beside the gold one")
    raft_no_answer_share: float = Field(
        0.2, ge=0, le=1, description="Share of RAFT samples whose gold passage is removed (answer: not in context)"
    )
    holdout_seeds: int = Field(
        3,
        ge=0,
        description="Skill seed examples per recipe kept out of generation for evaluation (knowledge: the last Q&A of "
        "each context)",
    )
    seed: int = Field(7, description="Random seed of sampling choices")


class FilterConfig(BaseModel):
    """Thresholds of the sample filters."""

    model_config = ConfigDict(extra="forbid")

    min_answer_chars: int = Field(8, ge=0, description="Shorter answers are dropped")
    max_answer_chars: int = Field(1200, ge=16, description="Longer answers are dropped")
    min_question_chars: int = Field(8, ge=0, description="Shorter questions are dropped")
    near_duplicate: float = Field(
        0.95, gt=0, le=1, description="Cosine similarity (MiniLM) above which a question is a near-duplicate"
    )
    judge: bool = Field(True, description="Ask the teacher to score faithfulness, relevance and quality (1-5)")
    min_judge_score: float = Field(
        3.0, ge=1, le=5, description="Samples whose lowest judge score is below this are dropped"
    )


class PhaseConfig(BaseModel):
    """LoRA hyperparameters of one training phase."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(16, ge=1, le=256, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Modules that get LoRA weights",
    )
    epochs: float = Field(2.0, gt=0, le=20, description="Passes over the phase's data")
    learning_rate: float = Field(5e-4, gt=0, description="AdamW learning rate")
    batch_size: int = Field(4, ge=1, description="Samples per optimiser step")
    max_seq_len: int = Field(384, ge=32, description="Longer samples are truncated")
    replay_share: float = Field(
        0.0, ge=0, le=1, description="Share of earlier phases' data replayed, relative to this phase's size"
    )
    general_share: float = Field(
        0.2, ge=0, le=1, description="Share of general instruction data mixed in, relative to this phase's size"
    )


def _knowledge_phase() -> PhaseConfig:
    return PhaseConfig(epochs=2.0, learning_rate=5e-4, general_share=0.2)


def _skills_phase() -> PhaseConfig:
    # Style is a small dataset to imprint firmly: more passes at a higher rate than knowledge; the replayed
    # knowledge and general data keep forgetting in check (bench/tune.py measures both).
    return PhaseConfig(epochs=3.0, learning_rate=1e-3, replay_share=0.3, general_share=0.2)


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "smollm2",
        description="The base to train on: `smollm2`, a .gguf file or a model folder; "
        "the CLI uses adapters.engine.model, so adapters fit the served base",
    )
    knowledge: PhaseConfig = Field(default_factory=_knowledge_phase, description="Phase 1: knowledge data")
    skills: PhaseConfig = Field(default_factory=_skills_phase, description="Phase 2: skills + style data, with replay")
    seed: int = Field(42, description="Seed of torch, shuffling and LoRA init")
    save_every_steps: int = Field(20, ge=1, description="Checkpoint interval (resumable)")
    device: str = Field("auto", description="`auto` (cuda when present), `cpu`, `cuda`")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Training compute precision: `auto` = bf16 autocast where the CPU has AVX512-BF16/AMX (or a "
        "bf16 GPU), else fp32; LoRA weights and optimiser state stay fp32",
    )
    threads: int | None = Field(None, description="torch intra-op threads on CPU")


class GateConfig(BaseModel):
    """When an evaluated adapter may be published."""

    model_config = ConfigDict(extra="forbid")

    min_rougel_gain: float = Field(
        0.0, description="Adapter ROUGE-L on held-out recipe questions minus base's must be at least this"
    )
    min_style_rate: float = Field(0.8, ge=0, le=1, description="Style recipes: share of answers carrying the sign-off")
    max_perplexity_increase: float = Field(
        0.05, ge=0, description="General-text perplexity may grow by at most this share"
    )
    min_judge_gain: float | None = Field(
        None,
        description="With eval_judge: adapter's mean judge score (1-5) minus base's must be at least this; None: "
        "reported only",
    )
    min_rag_gain: float = Field(
        0.0,
        description="Knowledge: adapter + RAG key-fact accuracy minus base + RAG must be at least this (0.15: "
        "15 points); the adapter must not make retrieval worse",
    )
    min_adapter_accuracy: float | None = Field(
        None, ge=0, le=1, description="Knowledge: the adapter alone's key-fact accuracy must be at least this"
    )
    enforce: bool = Field(True, description="False: report the gate but publish anyway")


class TuningConfig(BaseModel):
    """The `tuning:` section of carafe.yaml."""

    model_config = ConfigDict(extra="forbid")

    taxonomy: Path = Field(Path("taxonomy"), description="Default taxonomy folder")
    output_dir: Path | None = Field(
        None, description="Stage outputs (data, checkpoints, eval); default <data_dir>/tuning"
    )
    document_mirrors: dict[str, Path] = Field(
        default_factory=dict,
        description="Local copies of knowledge recipes' remote document repos, {URL: path} "
        "(a git clone, read at the recipe's commit, or a plain folder); an unmirrored URL is cloned into "
        "<output_dir>/documents only from a host in document_hosts",
    )
    document_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts an unmirrored document repo may be cloned from (e.g. github.com); empty: none, every "
        "remote repo must be mirrored (a recipe never makes the host fetch a URL of its choosing)",
    )
    document_roots: list[Path] = Field(
        default_factory=list,
        description="Local folders, besides the taxonomy itself, that knowledge recipes may read documents from; "
        "a recipe's local document path must resolve inside one of them",
    )
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    eval_max_new_tokens: int = Field(64, ge=8, description="Answer length during evaluation")
    eval_rag_top_k: int = Field(4, ge=1, le=20, description="Passages the RAG cells of the evaluation retrieve")
    eval_judge: bool = Field(
        True,
        description="Let the teacher grade base and adapter answers on held-out questions "
        "(faithfulness to the reference, relevance, quality; 1-5); skipped when the teacher is the embedded model",
    )

    def out_dir(self, data_dir: Path) -> Path:
        return self.output_dir or data_dir / "tuning"
