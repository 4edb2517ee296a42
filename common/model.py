"""Sequence recommender over product-quantized item codes with a local domain prompt."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.config import ModelConfig

logger = logging.getLogger(__name__)

# Standard deviation of the normal initialization of embeddings, linear weights and
# the domain prompt, as in SASRec-style recommenders.
INIT_STD = 0.02


def _init_weights(module: nn.Module) -> None:
    """Initialize one submodule in place, for use with ``nn.Module.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        # The packed Q/K/V projection is a bare parameter, not an nn.Linear.
        if module.in_proj_weight is not None:
            nn.init.normal_(module.in_proj_weight, mean=0.0, std=INIT_STD)
        if module.in_proj_bias is not None:
            nn.init.zeros_(module.in_proj_bias)


class GlobalEncoder(nn.Module):
    """Aggregated part of the model: code embeddings and the causal Transformer.

    Submodules: ``code_embedding`` (D * (M + 1) rows of size H), ``position_embedding``
    (max_seq_len rows), ``input_norm`` (LayerNorm), ``dropout`` and ``encoder``
    (``n_layers`` post-norm Transformer layers with multi-head self-attention, a GELU
    feed-forward network and residual connections). Every domain builds the same
    shapes from the same ModelConfig, so these parameters can be averaged.

    Row ``k * (M + 1)`` of the code-embedding table is the padding row of subspace k
    and row ``k * (M + 1) + c + 1`` embeds code c of subspace k. The padding rows are
    zeroed at initialization and ``item_vectors`` never reads them, so they get no
    gradient and contribute nothing to any output, whatever values they contain.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.hidden_size % config.n_heads:
            raise ValueError(
                f"hidden_size ({config.hidden_size}) must be divisible by "
                f"n_heads ({config.n_heads}); change one of them"
            )
        self.n_subspaces = config.n_subspaces
        self.n_centroids = config.n_centroids
        self.max_seq_len = config.max_seq_len

        self.code_embedding = nn.Embedding(
            config.n_subspaces * (config.n_centroids + 1), config.hidden_size
        )
        self.position_embedding = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.input_norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=config.hidden_size,
            nhead=config.n_heads,
            dim_feedforward=config.inner_size,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
        )
        # Nested tensors only help with a key-padding mask, which is never passed.
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=config.n_layers, enable_nested_tensor=False
        )

        self.apply(_init_weights)
        with torch.no_grad():
            self.code_embedding.weight[self._padding_rows()] = 0.0

    def _padding_rows(self) -> Tensor:
        """Return the D indices of the padding rows of the code-embedding table."""
        return torch.arange(
            self.n_subspaces, device=self.code_embedding.weight.device
        ) * (self.n_centroids + 1)

    def item_vectors(self, item_codes: Tensor) -> Tensor:
        """Compute each item's vector as the mean of its D code embeddings.

        Parameters
        ----------
        item_codes : LongTensor, shape [N + 1, D]
            Code of every item in every subspace, values in 0..M-1. Row 0 is the
            padding item and is ignored.

        Returns
        -------
        Tensor, shape [N + 1, H]
            Item vectors. Row 0 (padding) is all zeros.

        Raises
        ------
        ValueError
            If the shape does not match D or a code of a real item is outside 0..M-1.
        """
        _check_item_codes(item_codes, self.n_subspaces, self.n_centroids)
        offsets = self._padding_rows() + 1
        rows = item_codes[1:].to(offsets.device) + offsets
        vectors = self.code_embedding(rows).mean(dim=1)
        padding = vectors.new_zeros(1, vectors.shape[1])
        return torch.cat([padding, vectors], dim=0)

    def forward(self, items: Tensor, item_vectors: Tensor) -> Tensor:
        """Encode right-padded item sequences with a causal Transformer.

        Parameters
        ----------
        items : LongTensor, shape [B, L]
            Internal item indices, right-padded with 0, L <= max_seq_len.
        item_vectors : Tensor, shape [N + 1, H]
            Output of ``item_vectors``.

        Returns
        -------
        Tensor, shape [B, L, H]
            Hidden state at every position. Position j depends on positions <= j
            only. Outputs at padding positions are finite but meaningless.

        Raises
        ------
        ValueError
            If items is not a 2-D integer tensor, is longer than max_seq_len or contains
            an index outside 0..N.
        """
        _check_items(items, item_vectors.shape[0] - 1, self.max_seq_len, "items")
        length = items.shape[1]
        positions = torch.arange(length, device=items.device)
        hidden = item_vectors[items] + self.position_embedding(positions)
        hidden = self.dropout(self.input_norm(hidden))

        # Query j may attend to keys 0..j. With right padding every padding position
        # comes after all real ones, so the causal mask alone keeps real positions
        # from seeing padding and no key-padding mask is needed. Each query can
        # attend at least to itself, so no softmax row is all -inf and no NaN appears.
        causal_mask = nn.Transformer.generate_square_subsequent_mask(
            length, device=items.device, dtype=hidden.dtype
        )
        return self.encoder(hidden, mask=causal_mask, is_causal=True)


class DomainPrompt(nn.Module):
    """Domain prompt: ``n_prompt_words`` learnable context words read by attention.

    The prompt P is [W, H]. Each hidden state h queries P through multi-head
    attention, head_i = Attention(h W_i^Q, P W_i^K, P W_i^V), and the heads are
    concatenated and projected by W^O (``attention.out_proj``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.hidden_size % config.prompt_heads:
            raise ValueError(
                f"hidden_size ({config.hidden_size}) must be divisible by "
                f"prompt_heads ({config.prompt_heads}); change one of them"
            )
        self.prompt = nn.Parameter(
            torch.empty(config.n_prompt_words, config.hidden_size)
        )
        self.attention = nn.MultiheadAttention(
            config.hidden_size,
            config.prompt_heads,
            dropout=config.dropout,
            batch_first=True,
        )
        self.apply(_init_weights)
        nn.init.normal_(self.prompt, mean=0.0, std=INIT_STD)

    def forward(self, hidden: Tensor) -> Tensor:
        """Read the prompt with each hidden state as query.

        Parameters
        ----------
        hidden : Tensor, shape [B, L, H]

        Returns
        -------
        Tensor, shape [B, L, H]
        """
        prompt = self.prompt.unsqueeze(0).expand(hidden.shape[0], -1, -1)
        read_out, _ = self.attention(hidden, prompt, prompt, need_weights=False)
        return read_out


class UserPrompt(nn.Module):
    """User prompt: the mean of local item-ID embeddings over the user's history.

    The table has N + 1 rows of size H, row 0 for padding (zero, never trained).
    The output at position j is the mean over the real items at positions 0..j, so
    it is causal like the encoder and training at every position uses no later
    item. Item IDs are the domain's own, so this table never leaves the domain.
    """

    def __init__(self, config: ModelConfig, n_items: int) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be positive, got {n_items}")
        self.item_embedding = nn.Embedding(
            n_items + 1, config.hidden_size, padding_idx=0
        )
        self.apply(_init_weights)
        with torch.no_grad():
            self.item_embedding.weight[0] = 0.0

    def forward(self, items: Tensor) -> Tensor:
        """Average the embeddings of the real items up to each position.

        Parameters
        ----------
        items : LongTensor, shape [B, L]
            Right-padded with 0.

        Returns
        -------
        Tensor, shape [B, L, H]
            Zero at a position with no real item at or before it.
        """
        summed = self.item_embedding(items).cumsum(dim=1)
        counts = (items != 0).cumsum(dim=1).clamp(min=1).unsqueeze(-1)
        return summed / counts


class LocalPrompt(nn.Module):
    """Domain-local part: the prompt branches and their fusion with h.

    ``fusion`` maps the concatenation [h; domain read-out; user prompt] (H per
    branch present) back to H, and ``fusion_norm`` normalizes it. The fusion starts
    as the identity on h and zero on the prompt branches, so prompt tuning starts
    from the pre-trained ranking (up to the LayerNorm) instead of a random
    projection of it. These parameters never leave the domain.

    Raises
    ------
    ValueError
        If neither branch is enabled, or ``hidden_size % prompt_heads`` is not 0.
    """

    def __init__(
        self,
        config: ModelConfig,
        n_items: int,
        *,
        domain_prompt: bool = True,
        user_prompt: bool = False,
    ) -> None:
        super().__init__()
        if not domain_prompt and not user_prompt:
            raise ValueError(
                "LocalPrompt needs domain_prompt or user_prompt; build the "
                "recommender without a local part instead"
            )
        hidden_size = config.hidden_size
        self.domain_prompt = DomainPrompt(config) if domain_prompt else None
        self.user_prompt = UserPrompt(config, n_items) if user_prompt else None
        branches = 1 + int(domain_prompt) + int(user_prompt)
        self.fusion = nn.Linear(branches * hidden_size, hidden_size)
        self.fusion_norm = nn.LayerNorm(hidden_size)

        with torch.no_grad():
            self.fusion.weight.zero_()
            self.fusion.weight[:, :hidden_size].copy_(torch.eye(hidden_size))
            self.fusion.bias.zero_()

    def forward(self, hidden: Tensor, items: Tensor) -> Tensor:
        """Fuse each hidden state with the prompt branches.

        Parameters
        ----------
        hidden : Tensor, shape [B, L, H]
            Global encoder output.
        items : LongTensor, shape [B, L]
            The encoder's input, right-padded with 0, read by the user prompt.

        Returns
        -------
        Tensor, shape [B, L, H]
        """
        parts = [hidden]
        if self.domain_prompt is not None:
            parts.append(self.domain_prompt(hidden))
        if self.user_prompt is not None:
            parts.append(self.user_prompt(items))
        return self.fusion_norm(self.fusion(torch.cat(parts, dim=-1)))


class SequenceRecommender(nn.Module):
    """Next-item recommender of one domain: global encoder plus local prompt.

    Parameters
    ----------
    config : ModelConfig
        Shapes shared by all domains.
    item_codes : LongTensor, shape [N + 1, D]
        Product-quantization codes of the domain's items, values in 0..M-1, row 0 for
        the padding item. Stored as the buffer ``item_codes``, which is local and is
        never part of ``global_state_dict``.
    domain_prompt, user_prompt : bool
        Which prompt branches ``local_part`` has. With neither, ``local_part`` is
        None and the model is the global part alone.

    The prompts take part in the output only while the buffer ``prompt_active`` is
    true (see ``set_prompt_active``). It starts false, so federated pre-training
    trains the global part alone, and it is saved with the model's state_dict.
    Building the model draws all initial values from torch's default generator, so
    the same ``torch.manual_seed`` gives the same parameters.
    """

    def __init__(
        self,
        config: ModelConfig,
        item_codes: Tensor,
        *,
        domain_prompt: bool = True,
        user_prompt: bool = False,
    ) -> None:
        super().__init__()
        _check_item_codes(item_codes, config.n_subspaces, config.n_centroids)
        self.config = config
        self.global_part = GlobalEncoder(config)
        self.local_part: LocalPrompt | None = None
        if domain_prompt or user_prompt:
            self.local_part = LocalPrompt(
                config,
                int(item_codes.shape[0]) - 1,
                domain_prompt=domain_prompt,
                user_prompt=user_prompt,
            )
        self.register_buffer("item_codes", item_codes.detach().to(torch.long).clone())
        self.item_codes: Tensor
        self.register_buffer("prompt_active", torch.tensor(False))
        self.prompt_active: Tensor

    def set_prompt_active(self, active: bool) -> None:
        """Switch the local prompt into (True) or out of (False) the output.

        Raises
        ------
        ValueError
            If ``active`` is True and the model has no local part.
        """
        if active and self.local_part is None:
            raise ValueError(
                "the model has no prompt branch to activate; build it with "
                "domain_prompt=True or user_prompt=True"
            )
        self.prompt_active.fill_(bool(active))

    def _local(self, hidden: Tensor, items: Tensor) -> Tensor:
        if self.local_part is None or not bool(self.prompt_active):
            return hidden
        return self.local_part(hidden, items)

    @property
    def n_items(self) -> int:
        """Number N of real items of the domain."""
        return int(self.item_codes.shape[0]) - 1

    def set_item_codes(self, item_codes: Tensor) -> None:
        """Replace the item codes, for example after a new codebook is trained.

        The number of items N may differ from the current codes, unless the model
        has a user prompt, whose item-ID table is sized for N.

        Raises
        ------
        TypeError
            If item_codes is not an integer tensor.
        ValueError
            If item_codes is not [N + 1, D] with codes in 0..M-1 for rows 1..N, or
            the model has a user prompt and N changes.
        """
        _check_item_codes(item_codes, self.config.n_subspaces, self.config.n_centroids)
        local_part = self.local_part
        user_prompt = local_part.user_prompt if local_part is not None else None
        if user_prompt is not None and item_codes.shape[0] != self.item_codes.shape[0]:
            raise ValueError(
                f"item_codes has {item_codes.shape[0] - 1} items, but the user "
                f"prompt's item table is sized for {self.n_items}; keep the item "
                "count or build a new model"
            )
        self.item_codes = (
            item_codes.detach()
            .to(device=self.item_codes.device, dtype=torch.long)
            .clone()
        )

    def _item_vectors(self) -> Tensor:
        return self.global_part.item_vectors(self.item_codes)

    def sequence_output(self, items: Tensor) -> Tensor:
        """Compute the fused representation at every position.

        Parameters
        ----------
        items : LongTensor, shape [B, L]
            Right-padded with 0.

        Returns
        -------
        Tensor, shape [B, L, H]
        """
        hidden = self.global_part(items, self._item_vectors())
        return self._local(hidden, items)

    def last_output(self, items: Tensor, lengths: Tensor) -> Tensor:
        """Compute the fused representation at the last real position of each row.

        Parameters
        ----------
        items : LongTensor, shape [B, L]
            Right-padded with 0.
        lengths : LongTensor, shape [B]
            Number of real items per row, in 1..L.

        Returns
        -------
        Tensor, shape [B, H]
            Row b is the output at position ``lengths[b] - 1``.
        """
        if lengths.dim() != 1 or lengths.shape[0] != items.shape[0]:
            raise ValueError(
                f"lengths must have shape [B] = [{items.shape[0]}], "
                f"got {list(lengths.shape)}"
            )
        if lengths.numel() and (lengths.min() < 1 or lengths.max() > items.shape[1]):
            raise ValueError(
                f"lengths must be in 1..L = 1..{items.shape[1]}, got values from "
                f"{int(lengths.min())} to {int(lengths.max())}"
            )
        output = self.sequence_output(items)
        index = (lengths.to(output.device) - 1).view(-1, 1, 1)
        index = index.expand(-1, 1, output.shape[-1])
        return output.gather(1, index).squeeze(1)

    def _scores(self, representation: Tensor, item_vectors: Tensor) -> Tensor:
        if self.config.scoring == "cosine":
            representation = F.normalize(representation, dim=-1)
            item_vectors = F.normalize(item_vectors, dim=-1)
            scores = representation @ item_vectors.T / self.config.temperature
        else:
            scores = representation @ item_vectors.T
        padding = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        padding[0] = True
        return scores.masked_fill(padding, float("-inf"))

    def scores(self, representation: Tensor) -> Tensor:
        """Score every item of the domain against each representation.

        With ``scoring == "cosine"`` a score is the cosine similarity divided by
        ``temperature``. With ``"dot"`` it is the dot product.

        Parameters
        ----------
        representation : Tensor, shape [..., H]

        Returns
        -------
        Tensor, shape [..., N + 1]
            Column 0 (padding) is -inf.
        """
        return self._scores(representation, self._item_vectors())

    def score_items(self, representation: Tensor, item_vectors: Tensor) -> Tensor:
        """Score representations against given item vectors, as ``scores`` does.

        For ranking a catalogue other than ``item_codes``, such as one with items
        added after training, whose vectors come from ``global_part.item_vectors``.

        Parameters
        ----------
        representation : Tensor, shape [..., H]
        item_vectors : Tensor, shape [N' + 1, H]
            Row 0 is padding.

        Returns
        -------
        Tensor, shape [..., N' + 1]
            Column 0 (padding) is -inf.
        """
        return self._scores(representation, item_vectors)

    def loss(self, items: Tensor, targets: Tensor) -> Tensor:
        """Compute the full-softmax cross entropy of next-item prediction.

        Every position with a nonzero target counts once, and the result is the mean
        over those positions.

        Parameters
        ----------
        items : LongTensor, shape [B, L]
            Input sequences, right-padded with 0.
        targets : LongTensor, shape [B, L]
            Next item at every position, 0 where the position is ignored.

        Returns
        -------
        Tensor, scalar

        Raises
        ------
        ValueError
            If the shapes differ, a target is outside 0..N, or no target is nonzero
            (the mean would be undefined).
        """
        if targets.shape != items.shape:
            raise ValueError(
                f"targets must have the shape of items {list(items.shape)}, "
                f"got {list(targets.shape)}"
            )
        _check_items(targets, self.n_items, self.config.max_seq_len, "targets")
        counted = targets != 0
        if not bool(counted.any()):
            raise ValueError("targets has no nonzero entry, so the loss is undefined")

        item_vectors = self._item_vectors()
        hidden = self._local(self.global_part(items, item_vectors), items)
        # Score only the counted positions, because padding rows would waste
        # up to B * L * N products.
        logits = self._scores(hidden[counted], item_vectors)
        return F.cross_entropy(logits, targets[counted])


def _check_item_codes(item_codes: Tensor, n_subspaces: int, n_centroids: int) -> None:
    if not isinstance(item_codes, Tensor):
        raise TypeError(f"item_codes must be a Tensor, got {type(item_codes).__name__}")
    if item_codes.dtype.is_floating_point or item_codes.dtype == torch.bool:
        raise TypeError(f"item_codes must be an integer tensor, got {item_codes.dtype}")
    if item_codes.dim() != 2 or item_codes.shape[1] != n_subspaces:
        raise ValueError(
            f"item_codes must have shape [N + 1, D] with D = {n_subspaces}, "
            f"got {list(item_codes.shape)}"
        )
    if item_codes.shape[0] < 2:
        raise ValueError(
            "item_codes must have a padding row and at least one item, "
            f"got {item_codes.shape[0]} rows"
        )
    real = item_codes[1:]
    if real.min() < 0 or real.max() >= n_centroids:
        raise ValueError(
            f"item_codes of items 1..N must be in 0..M-1 = 0..{n_centroids - 1}, "
            f"got values from {int(real.min())} to {int(real.max())}"
        )


def _check_items(items: Tensor, n_items: int, max_seq_len: int, name: str) -> None:
    if items.dim() != 2 or items.dtype.is_floating_point or items.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a 2-D integer tensor [B, L], "
            f"got {items.dtype} of shape {list(items.shape)}"
        )
    if items.shape[1] > max_seq_len:
        raise ValueError(
            f"{name} has length {items.shape[1]}, more than max_seq_len = "
            f"{max_seq_len}; keep the last max_seq_len items"
        )
    if items.numel() and (items.min() < 0 or items.max() > n_items):
        raise ValueError(
            f"{name} must contain item indices in 0..N = 0..{n_items}, got values from "
            f"{int(items.min())} to {int(items.max())}"
        )


def global_parameter_names(config: ModelConfig) -> list[str]:
    """List the names of the global parameters in wire order.

    The order is the registration order of ``GlobalEncoder.state_dict()``:
    ``code_embedding.weight``, ``position_embedding.weight``, ``input_norm.weight``,
    ``input_norm.bias``, then for each layer l = 0..n_layers-1 the tensors
    ``encoder.layers.{l}.self_attn.in_proj_weight``, ``...in_proj_bias``,
    ``...out_proj.weight``, ``...out_proj.bias``, ``linear1``, ``linear2``,
    ``norm1``, ``norm2`` (weight then bias each). The names are derived from a model
    built on the meta device, which allocates no memory and draws no random numbers.
    """
    with torch.device("meta"):
        encoder = GlobalEncoder(config)
    # Only floating-point tensors are averaged; an integer buffer would be
    # meaningless as a mean and is never part of an upload.
    return [
        name
        for name, value in encoder.state_dict().items()
        if value.is_floating_point()
    ]


def global_state_dict(model: SequenceRecommender) -> dict[str, Tensor]:
    """Copy the global parameters, names relative to ``GlobalEncoder``, in wire order.

    Returns
    -------
    dict[str, Tensor]
        Detached CPU float32 copies, keyed by the names of
        ``global_parameter_names``. Local parameters and ``item_codes`` are absent.
    """
    return {
        name: tensor.detach().to(device="cpu", dtype=torch.float32).clone()
        for name, tensor in model.global_part.state_dict().items()
    }


def load_global_state_dict(
    model: SequenceRecommender, state: dict[str, Tensor]
) -> None:
    """Overwrite the global parameters of ``model`` in place from ``state``.

    Values are cast to each parameter's dtype and device. Local parameters and
    ``item_codes`` are left unchanged.

    Raises
    ------
    TypeError
        If a value is not a Tensor.
    ValueError
        If a name is missing or unexpected, a shape differs or a value is not
        finite; the message names the tensors. Nothing is changed in that case.
    """
    targets = model.global_part.state_dict()
    missing = [name for name in targets if name not in state]
    unexpected = sorted(name for name in state if name not in targets)
    if missing or unexpected:
        raise ValueError(
            f"global state does not match the model: missing {missing}, "
            f"unexpected {unexpected}; build both from the same ModelConfig"
        )
    for name, value in state.items():
        if not isinstance(value, Tensor):
            raise TypeError(
                f"global state {name!r} must be a Tensor, got {type(value)}"
            )
        if value.shape != targets[name].shape:
            raise ValueError(
                f"global state {name!r} has shape {list(value.shape)}, the model "
                f"expects {list(targets[name].shape)}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"global state {name!r} contains NaN or infinite values")

    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(state[name])
