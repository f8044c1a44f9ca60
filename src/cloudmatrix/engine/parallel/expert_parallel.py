"""Expert parallelism over torch.distributed ranks: dispatch -> local expert slots -> combine.

Attention is data-parallel: each rank owns its own tokens and calls the backend with its own T
(possibly 0). Every rank must call the backend the same number of times (once per MoE layer per
step), because dispatch and combine are collectives.

One call, on rank r:
  1. route: each (token, choice) -> a global slot (placement.route spreads replicas by token index)
     -> (destination rank, local slot). A token is sent once per destination rank, however many of
     its k experts live there (DeepEP-style deduplication).
  2. dispatch: split sizes are exchanged with one all_to_all_single, then one all_to_all_single
     moves packed rows [hidden (INT8 + fp32 scale per token, or the hidden dtype) | k local slot
     ids | k routing weights] as raw bytes, so any dtype travels over gloo or NCCL alike.
  3. local experts: received (row, choice) pairs are grouped by local slot; each slot's expert runs
     once on its rows; outputs are weighted and summed per row (partial sums for that rank).
  4. combine: the partial rows go back along the reverse splits (combine dtype, default the
     hidden dtype) and the source adds them into its tokens: the weighted sum finishes at the source.

Bytes are counted per call in `stats` (what each rank hands to all_to_all_single, and the part
that leaves the rank).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from cloudmatrix.engine.model.experts import ExpertWeights, expert_forward
from cloudmatrix.engine.parallel.placement import SlotMap
from cloudmatrix.engine.quant.int8 import (
    INT8_EXPERT_BUFFERS,
    Int8ExpertWeights,
    dequantize,
    int8_weights_of,
    quantize_expert_weights,
    quantize_per_token,
    register_int8_expert_buffers,
)
from cloudmatrix.errors import CloudMatrixError

_META_SLOT = torch.int32  # local slot id per choice, -1 when that choice lives on another rank
_META_WEIGHT = torch.float32  # routing weight per choice, kept fp32 so the weighted sum is exact
_FLOAT_BUFFERS = ("gate", "up", "down")


def dispatch_row_bytes(hidden_size: int, top_k: int, dtype: torch.dtype, int8: bool) -> dict[str, int]:
    """Bytes in one dispatched row: payload, per-token scale and routing metadata."""
    payload = hidden_size if int8 else hidden_size * dtype.itemsize
    scale = 4 if int8 else 0
    meta = top_k * (_META_SLOT.itemsize + _META_WEIGHT.itemsize)
    return {"payload": payload, "scale": scale, "meta": meta, "total": payload + scale + meta}


@dataclass
class CommStats:
    """Cumulative traffic and time of one EP backend on this rank, seen from this rank's own tokens.

    dispatch_bytes: what this rank sends out for its tokens; combine_bytes: what comes back to it
    for them. Summed over ranks each equals the collective's total traffic. *_remote_* leave out
    the rows a rank exchanges with itself (no fabric crossed). Reset with `reset()`.
    """

    calls: int = 0
    tokens: int = 0  # tokens this rank routed
    pairs: int = 0  # (token, expert) choices routed
    dispatch_rows: int = 0  # (token, destination rank) rows sent
    dispatch_bytes: int = 0
    dispatch_remote_bytes: int = 0
    combine_bytes: int = 0
    combine_remote_bytes: int = 0
    split_bytes: int = 0  # the split-size exchange that precedes each dispatch
    rows_received: int = 0  # rows other ranks (and this one) sent here to compute
    dispatch_s: float = 0.0
    compute_s: float = 0.0
    combine_s: float = 0.0

    def reset(self) -> None:
        self.__init__()

    @property
    def dispatch_bytes_per_token(self) -> float:
        return self.dispatch_bytes / self.tokens if self.tokens else 0.0

    @property
    def combine_bytes_per_token(self) -> float:
        return self.combine_bytes / self.tokens if self.tokens else 0.0


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """[R, n] tensor of any dtype -> [R, n * itemsize] uint8 view (contiguous)."""
    return t.contiguous().view(torch.uint8)


def _from_bytes(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return b.contiguous().view(dtype)


def _all_to_all(recv_rows: list[int], send: torch.Tensor, send_rows: list[int], group, async_op: bool = False):
    """(receive buffer, work handle or None): rows to and from every peer with per-peer split sizes."""
    out = torch.empty((sum(recv_rows), send.shape[1]), dtype=send.dtype, device=send.device)
    work = dist.all_to_all_single(
        out, send, output_split_sizes=recv_rows, input_split_sizes=send_rows, group=group, async_op=async_op
    )
    return out, work


@dataclass
class _Pending:
    """One EP call between its phases (begin -> run -> end)."""

    n_tok: int
    h: int
    k: int
    dtype: torch.dtype
    row_tok: torch.Tensor
    send: list[int]
    recv: list[int]
    row_bytes: int
    buffer: torch.Tensor  # received rows after begin, returned partial sums after run
    work: Any
    async_op: bool
    t0: float
    times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = [self.t0]


class ExpertParallelExperts(torch.nn.Module):
    """Experts backend sharded over a torch.distributed group (gloo on CPU, NCCL on GPU).

    local_weights holds this rank's slots in `placement.experts_on(rank)` order, float
    (ExpertWeights) or W8A8 (Int8ExpertWeights). `dispatch_int8` sends tokens INT8 with one fp32
    scale per token (CloudMatrix-Infer's FusedDispatch); `combine_dtype` sets the combine payload
    (default: the hidden dtype; torch.bfloat16 mirrors FusedCombine).
    """

    def __init__(
        self,
        local_weights: ExpertWeights | Int8ExpertWeights,
        placement: SlotMap,
        group: dist.ProcessGroup | None = None,
        dispatch_int8: bool = False,
        combine_dtype: torch.dtype | None = None,
        tag: int = 0,
    ):
        super().__init__()
        if not dist.is_initialized():
            raise CloudMatrixError(
                "ExpertParallelExperts needs torch.distributed initialised; call "
                "dist.init_process_group (or use cloudmatrix.engine.parallel.launch.run_ranks) first"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        if placement.num_ranks != self.world_size:
            raise CloudMatrixError(
                f"the placement spans {placement.num_ranks} ranks but the process group has "
                f"{self.world_size}; build the placement with num_ranks={self.world_size}"
            )
        held = placement.experts_on(self.rank)
        if local_weights.num_experts != len(held):
            raise CloudMatrixError(
                f"rank {self.rank} holds {len(held)} expert slots but was given weights for "
                f"{local_weights.num_experts}; pass weights.select(placement.experts_on(rank)) "
                "or use ExpertParallelExperts.from_full"
            )
        self.placement = placement
        self._set_weights(local_weights)
        self.dispatch_int8 = dispatch_int8
        self.combine_dtype = combine_dtype
        # Which MoE call this is (layer order): exchanged with the split sizes, so ranks that run
        # different layers at the same collective fail loudly instead of mixing tokens.
        self.tag = tag
        self.stats = CommStats()
        self.path_counts: Counter[str] = Counter()  # INT8 matmul paths of the local experts
        self.slot_load = torch.zeros(local_weights.num_experts, dtype=torch.long)  # pairs run per slot

    @classmethod
    def from_full(
        cls,
        weights: ExpertWeights | Int8ExpertWeights,
        placement: SlotMap,
        group: dist.ProcessGroup | None = None,
        **kwargs,
    ) -> ExpertParallelExperts:
        """Keep only this rank's slots of the full stacked weights (replicas are copies)."""
        rank = dist.get_rank(group) if dist.is_initialized() else 0
        return cls(weights.select(placement.experts_on(rank)), placement, group, **kwargs)

    def _set_weights(self, weights: ExpertWeights | Int8ExpertWeights) -> None:
        # Buffers, so that .to(), state_dict() and load_state_dict() reach this rank's expert slots.
        for name in (*_FLOAT_BUFFERS, *INT8_EXPERT_BUFFERS):
            self._buffers.pop(name, None)
        if isinstance(weights, Int8ExpertWeights):
            register_int8_expert_buffers(self, weights)
        else:
            for name in _FLOAT_BUFFERS:
                self.register_buffer(name, getattr(weights, name))

    @property
    def local_weights(self) -> ExpertWeights | Int8ExpertWeights:
        """This rank's slots, in placement.experts_on(rank) order, over the current buffers."""
        if "down_q" in self._buffers:
            return int8_weights_of(self)
        return ExpertWeights(self.gate, self.up, self.down)

    def quantize_int8(self) -> None:
        """Switch the local experts to W8A8 (used by quantize_model); dispatch precision is unchanged."""
        if isinstance(self.local_weights, ExpertWeights):
            self._set_weights(quantize_expert_weights(self.local_weights))

    # -- the backend call -------------------------------------------------------------------------

    def forward(self, hidden: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """hidden [T, H], topk_ids/topk_weights [T, k] -> [T, H]. T may differ per rank (and be 0); H, k,
        the dtype, dispatch_int8 and combine_dtype must be the same on every rank (one row layout)."""
        return self.end(self.run(self.begin(hidden, topk_ids, topk_weights)))

    # The three phases of a call, so a caller can overlap them with other work (microbatch pipelining):
    # begin = route + split exchange + dispatch started; run = dispatch awaited, local experts, combine
    # started; end = combine awaited, partial sums added at the source. Every rank must issue the same
    # phases in the same order (they are collectives); `async_op` overlaps the transfers with compute.

    def begin(
        self, hidden: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, async_op: bool = False
    ) -> _Pending:
        h_weights = self.local_weights.down_q.shape[1] if self._int8 else self.local_weights.down.shape[1]
        if hidden.dim() != 2 or topk_ids.shape != topk_weights.shape or topk_ids.shape[:1] != hidden.shape[:1]:
            raise CloudMatrixError(
                f"expected hidden [T, H] and topk_ids/topk_weights [T, k]; got {tuple(hidden.shape)}, "
                f"{tuple(topk_ids.shape)}, {tuple(topk_weights.shape)}"
            )
        if hidden.shape[1] != h_weights and self.local_weights.num_experts:
            raise CloudMatrixError(
                f"hidden size {hidden.shape[1]} does not match the experts' {h_weights}; "
                "build the EP backend from this model's expert weights"
            )
        n_tok, h = hidden.shape
        k = topk_ids.shape[1]
        dev = hidden.device
        world = self.world_size
        t0 = time.perf_counter()

        # 1. route: global slot -> (destination rank, local slot); rows are unique (token, rank).
        slots = self.placement.route(topk_ids.cpu(), self.rank)  # [T, k]
        dest = self.placement.slot_rank[slots]
        local = self.placement.slot_local[slots]
        tok = torch.arange(n_tok, dtype=torch.long)[:, None].expand(n_tok, k)
        key = (dest * max(n_tok, 1) + tok).reshape(-1)  # sorts rows by destination, then token
        row_keys, row_of_pair = torch.unique(key, sorted=True, return_inverse=True)
        n_rows = row_keys.numel()
        row_dest = row_keys // max(n_tok, 1)
        row_tok = (row_keys % max(n_tok, 1)).to(dev)
        meta_slot = torch.full((n_rows, k), -1, dtype=_META_SLOT)
        meta_w = torch.zeros((n_rows, k), dtype=_META_WEIGHT)
        choice = torch.arange(k).repeat(n_tok)
        meta_slot[row_of_pair, choice] = local.reshape(-1).to(_META_SLOT)
        meta_w[row_of_pair, choice] = topk_weights.detach().reshape(-1).cpu().to(_META_WEIGHT)
        send_rows = torch.bincount(row_dest, minlength=world)

        # 2. dispatch: exchange split sizes (with this call's tag, which must agree on every rank), then
        #    one packed byte buffer.
        header = torch.stack([send_rows, torch.full((world,), self.tag, dtype=torch.long)], dim=1).to(dev)
        recv_header = torch.empty_like(header)
        dist.all_to_all_single(recv_header, header, group=self.group)
        recv_header = recv_header.cpu()
        tags = recv_header[:, 1].tolist()
        if any(t != self.tag for t in tags):
            raise CloudMatrixError(
                f"EP ranks out of step: this rank ran MoE call {self.tag} while ranks ran {tags}; drive every "
                "rank of the group through cloudmatrix.engine.parallel.lockstep.StepSync"
            )
        send_list = send_rows.tolist()
        recv_list = recv_header[:, 0].tolist()
        x = hidden[row_tok]
        if self.dispatch_int8:
            xq, xs = quantize_per_token(x)
            parts = [_as_bytes(xq), _as_bytes(xs)]
        else:
            parts = [_as_bytes(x)]
        parts += [_as_bytes(meta_slot.to(dev)), _as_bytes(meta_w.to(dev))]
        packed = torch.cat(parts, dim=1)
        received, work = _all_to_all(recv_list, packed, send_list, self.group, async_op)
        return _Pending(
            n_tok, h, k, hidden.dtype, row_tok, send_list, recv_list, packed.shape[1], received, work, async_op, t0
        )

    def run(self, p: _Pending) -> _Pending:
        if p.work is not None:
            p.work.wait()
        t1 = time.perf_counter()
        # 3. local experts on the received rows.
        partial = self._run_local(p.buffer, p.h, p.k, p.dtype)
        out_dtype = self.combine_dtype or p.dtype
        t2 = time.perf_counter()
        # 4. combine: partial sums go back along the reverse splits.
        p.buffer, p.work = _all_to_all(p.send, _as_bytes(partial.to(out_dtype)), p.recv, self.group, p.async_op)
        p.times += [t1, t2]
        return p

    def end(self, p: _Pending) -> torch.Tensor:
        if p.work is not None:
            p.work.wait()
        out_dtype = self.combine_dtype or p.dtype
        back = _from_bytes(p.buffer, out_dtype)
        out = torch.zeros((p.n_tok, p.h), dtype=torch.float32, device=back.device)
        out.index_add_(0, p.row_tok, back.float())  # the weighted sum finishes at the source
        p.times.append(time.perf_counter())
        self._count(p.n_tok, p.k, p.send, p.recv, p.row_bytes, p.h * out_dtype.itemsize, tuple(p.times))
        return out.to(p.dtype)

    @property
    def _int8(self) -> bool:
        return isinstance(self.local_weights, Int8ExpertWeights)

    def _run_local(self, received: torch.Tensor, h: int, k: int, dtype: torch.dtype) -> torch.Tensor:
        """Run this rank's slots on the received rows; return the weighted partial sum per row (fp32)."""
        n = received.shape[0]
        dev = received.device
        off = 0
        if self.dispatch_int8:
            xq = _from_bytes(received[:, :h], torch.int8)
            xs = _from_bytes(received[:, h : h + 4], torch.float32)
            off = h + 4
        else:
            width = h * dtype.itemsize
            x = _from_bytes(received[:, :width], dtype)
            off = width
        slot_w = k * _META_SLOT.itemsize
        meta_slot = _from_bytes(received[:, off : off + slot_w], _META_SLOT).long()
        meta_w = _from_bytes(received[:, off + slot_w :], _META_WEIGHT)
        partial = torch.zeros((n, h), dtype=torch.float32, device=dev)
        if n == 0:
            return partial
        int8_weights = self._int8
        if self.dispatch_int8 and not int8_weights:
            x = dequantize(xq, xs, dtype)  # float experts: back to the model dtype
        flat = meta_slot.reshape(-1)
        valid = torch.nonzero(flat >= 0).squeeze(1)
        order = valid[torch.argsort(flat[valid], stable=True)]
        counts_t = torch.bincount(flat[order], minlength=self.local_weights.num_experts)
        self.slot_load += counts_t.cpu()
        counts = counts_t.tolist()
        row_of = order // k
        w_of = meta_w.reshape(-1)[order]
        start = 0
        for s, c in enumerate(counts):
            if c == 0:
                continue
            rows = row_of[start : start + c]
            if int8_weights:
                pre = (xq[rows], xs[rows]) if self.dispatch_int8 else None
                xin = None if self.dispatch_int8 else x[rows]
                y = self.local_weights.forward_expert(
                    xin, s, self.path_counts, pre_quantized=pre, out_dtype=torch.float32
                )
            else:
                y = expert_forward(x[rows], self.local_weights, s)
            partial.index_add_(0, rows, y.float() * w_of[start : start + c, None])
            start += c
        return partial

    def _count(
        self,
        n_tok: int,
        k: int,
        send: list[int],
        recv: list[int],
        row_bytes: int,
        combine_row_bytes: int,
        times: tuple[float, float, float, float],
    ) -> None:
        st = self.stats
        st.calls += 1
        st.tokens += n_tok
        st.pairs += n_tok * k
        rows = sum(send)
        remote = rows - send[self.rank]  # the same rows come back in combine
        st.dispatch_rows += rows
        st.dispatch_bytes += rows * row_bytes
        st.dispatch_remote_bytes += remote * row_bytes
        st.combine_bytes += rows * combine_row_bytes
        st.combine_remote_bytes += remote * combine_row_bytes
        st.split_bytes += self.world_size * 16  # row count and call tag per peer
        st.rows_received += sum(recv)
        t0, t1, t2, t3 = times
        st.dispatch_s += t1 - t0
        st.compute_s += t2 - t1
        st.combine_s += t3 - t2


def use_expert_parallel(
    model: torch.nn.Module,
    placement: SlotMap,
    group: dist.ProcessGroup | None = None,
    **kwargs,
) -> list[str]:
    """Swap every MoE layer's `.experts` backend (LocalExperts or Int8Experts) for an EP backend, in place.

    Each rank keeps only its own slots. Returns the names of the swapped modules.
    """
    from cloudmatrix.engine.model.experts import LocalExperts
    from cloudmatrix.engine.quant.int8 import Int8Experts

    swapped = []
    for name, module in list(model.named_modules()):
        backend = getattr(module, "experts", None)
        if isinstance(backend, LocalExperts | Int8Experts):
            if backend.weights.num_experts != placement.num_experts:
                raise CloudMatrixError(
                    f"{name}.experts has {backend.weights.num_experts} experts but the placement has "
                    f"{placement.num_experts}; build the placement from the model's n_routed_experts"
                )
            tag = len(swapped)
            module.experts = ExpertParallelExperts.from_full(backend.weights, placement, group, tag=tag, **kwargs)
            swapped.append(f"{name}.experts" if name else "experts")
    if not swapped:
        raise CloudMatrixError(
            "use_expert_parallel found no MoE layer with a LocalExperts/Int8Experts `.experts` backend; "
            "pass a model built with cloudmatrix.engine.model"
        )
    return swapped
