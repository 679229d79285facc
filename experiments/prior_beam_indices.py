"""The indices the codec writes (beam search of 4 paths, effort 1), for training the prior on them (issue 8, item 4).

    python benchmarks/prior_beam_indices.py --part 0 --parts 2 &    # one process per core, same crops
    python benchmarks/prior_beam_indices.py --part 1 --parts 2
    python benchmarks/prior_beam_indices.py --merge --parts 2       # -> runs/beam/indices.pt
    python benchmarks/prior_beam_indices.py --compare 160           # greedy and beam on the same first crops
    python benchmarks/prior_beam_indices.py --per-quality 96        # the beam over each number of stages
    python benchmarks/prior_beam_indices.py --own --part 0 --parts 2 &   # each quality's own beam, 1-9 stages
    python benchmarks/prior_beam_indices.py --own --part 1 --parts 2
    python benchmarks/prior_beam_indices.py --own --merge --parts 2 # -> runs/beam/own.pt

`vqcodec train` collects the prior's training indices with the greedy quantizer (beam 1); the codec writes
beam-search indices, which differ in 16 to 81 % of positions depending on the stage. This collects 3,200
random 256x256 crops of the training photos (CropSampler seed 1, batches of 8, as `vqcodec train` samples
them for a 256-pixel crop) encoded through all 10 stages with the beam search. The parts share the sampler and
each encodes every parts-th batch, so the merged tensor does not depend on how many parts ran.
Then: benchmarks/prior_finetune.py.
"""
import argparse
import time
from pathlib import Path

import torch

COUNT, BATCH = 3200, 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--model", default="vqf8-v11",
                    help="the model whose encoder makes the indices (vqf8-v11's encoder is vqf8-v10's: the same indices)")
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--merge", action="store_true", help="join the parts into DIR/indices.pt (own.pt with --own)")
    ap.add_argument("--dir", default="runs/beam", help="where the parts and the merged tensors go (default runs/beam)")
    ap.add_argument("--own", action="store_true",
                    help="the same crops, each encoded as every quality of 1-9 stages does (the beam over its own "
                         "stages; 10 stages is indices.pt), stored (crops, 9, 32, 32, 10) int16 with the stages a "
                         "quality does not code set to 0")
    ap.add_argument("--compare", type=int, default=0, metavar="N",
                    help="instead: the first N crops both ways, the share of indices the beam changes per stage "
                         "and the model's integer prior's bits per index on each")
    ap.add_argument("--per-quality", type=int, default=0, metavar="N",
                    help="instead: the first N crops encoded as each quality 3-12 does (the beam over its own "
                         "1-10 stages), the model's integer prior's bits per index on each, and the share of "
                         "indices that differ from the 10-stage beam's")
    args = ap.parse_args()
    name = "own" if args.own else "indices"                                  # DIR/{name}_{part}.pt, {name}.pt
    if args.merge:
        parts = sorted((item for p in range(args.parts)
                        for item in torch.load(f"{args.dir}/{name}_{p}.pt", weights_only=True)), key=lambda t: t[0])
        if [i for i, _ in parts] != list(range(COUNT // BATCH)):
            raise SystemExit("Error: the parts do not cover every batch")
        torch.save(torch.cat([x for _, x in parts]), f"{args.dir}/{name}.pt")  # (3200, 32, 32, 10) int64 or (3200, 9, 32, 32, 10) int16
        return

    from vqcodec.codec import load_codec
    from vqcodec.data import CropSampler
    from vqcodec.train import load_images

    torch.set_num_threads(1)
    codec = load_codec(args.model)
    ae, prior = codec.autoencoder.eval(), codec.prior
    large = [im for im in load_images(args.data, 256) if min(im.shape[:2]) >= 256]
    sampler = CropSampler(large, 256, seed=1)
    out, t0 = [], time.time()
    if args.per_quality:
        from vqcodec.train import integer_bits_per_index

        crops = torch.cat([sampler.batch(BATCH) for _ in range(0, args.per_quality, BATCH)])[:args.per_quality]
        with torch.no_grad():
            full = torch.cat([ae.encode_indices(crops[i:i + BATCH], 10, beam=4) for i in range(0, len(crops), BATCH)])
            for q in range(1, 11):
                own = torch.cat([ae.encode_indices(crops[i:i + BATCH], q, beam=4) for i in range(0, len(crops), BATCH)])
                ideal, _ = integer_bits_per_index(prior, own)
                first10, _ = integer_bits_per_index(prior, full[..., :q].contiguous())
                print(f"stages {q}: own beam {ideal:.4f} bits per index, the 10-stage beam's first {q} stages "
                      f"{first10:.4f}; differ from them: {(own != full[..., :q]).float().mean().item():.3f}", flush=True)
        return
    if args.compare:
        from vqcodec.train import integer_bits_per_index

        greedy, beam = [], []
        with torch.no_grad():
            for _ in range(0, args.compare, BATCH):
                x = sampler.batch(BATCH)
                greedy.append(ae.encode_indices(x, 10, beam=1))
                beam.append(ae.encode_indices(x, 10, beam=4))
        greedy, beam = torch.cat(greedy)[:args.compare], torch.cat(beam)[:args.compare]
        print("share of indices the beam changes, per stage:",
              [round(v, 3) for v in (greedy != beam).float().mean(dim=(0, 1, 2)).tolist()])
        print("bits per index (ideal, coded): greedy", integer_bits_per_index(prior, greedy),
              "beam", integer_bits_per_index(prior, beam))
        return
    with torch.no_grad():
        for i in range(COUNT // BATCH):
            x = sampler.batch(BATCH)
            if i % args.parts == args.part:
                if args.own:
                    grids = torch.zeros(BATCH, 9, 32, 32, 10, dtype=torch.int16)
                    for q in range(1, 10):
                        grids[:, q - 1, ..., :q] = ae.encode_indices(x, q, beam=4).to(torch.int16)
                    out.append((i, grids))                                   # (8, 9, 32, 32, 10)
                else:
                    out.append((i, ae.encode_indices(x, 10, beam=4)))                # (8, 32, 32, 10)
            if i % 50 == 0:
                print(i, round(time.time() - t0), flush=True)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    torch.save(out, f"{args.dir}/{name}_{args.part}.pt")
    print("done", time.time() - t0)


if __name__ == "__main__":
    main()
