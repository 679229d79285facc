"""Issue 28: the realistic decoder (a texture head trained against a PatchGAN) and how files reach it."""
import json
import shutil

import numpy as np
import pytest
import torch

import vqcodec
from vqcodec.codec import VQCodec
from vqcodec.realistic import (PatchDiscriminator, RealisticSettings, TextureHead, adaptive_weight, faithfulness,
                               head_config, hinge_d_loss, load_head, save_head, serving_qualities)


def test_the_head_starts_as_the_identity_and_keeps_the_size():
    head = TextureHead(stages=3, channels=8, blocks=2)
    x = torch.rand(2, 3, 16, 24)
    assert torch.equal(head(x, torch.tensor([1, 3])), x)
    torch.nn.init.normal_(head.out.weight, std=0.1)
    y = head(x, torch.tensor([1, 3]))
    assert y.shape == x.shape and not torch.equal(y, x)


def test_the_patch_discriminator_gives_a_logit_per_patch():
    assert PatchDiscriminator(8, 3)(torch.rand(2, 3, 128, 128)).shape == (2, 1, 14, 14)


def test_hinge_loss_and_adaptive_weight():
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    assert float(hinge_d_loss(torch.zeros(4), torch.zeros(4))) == 1.0
    w = torch.ones(3, requires_grad=True)
    rec, gan = (w * 2).sum(), (w * 0.5).sum()
    assert abs(float(adaptive_weight(rec, gan, w)) - 4.0) < 1e-3   # |grad rec| / |grad gan|


def test_faithfulness_lets_texture_move_but_not_colour():
    x = torch.full((1, 3, 16, 16), 0.5)
    texture = x + 0.1 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 8)   # zero mean in every 4x4 block
    shifted = x + 0.1
    assert float(faithfulness(texture, x, 4, 1.0)) == pytest.approx(0.1)        # L1 alone
    assert float(faithfulness(shifted, x, 4, 1.0)) == pytest.approx(0.1 + 100 * 0.01)


def test_the_head_round_trips_through_its_16_bit_file(tmp_path):
    head = TextureHead(stages=4, channels=8, blocks=1)
    torch.nn.init.normal_(head.out.weight, std=0.1)
    save_head(head, head_config(RealisticSettings(channels=8, blocks=1, max_quality=3)),
              tmp_path / "realistic.safetensors")
    back, config = load_head(tmp_path / "realistic.safetensors", 4)
    assert config == {"channels": 8, "blocks": 1, "qualities": [1, 2, 3]}
    for k, v in head.state_dict().items():
        assert torch.equal(back.state_dict()[k], v.half().float()), k


def test_the_head_serves_the_qualities_where_it_measured_well():
    st = RealisticSettings(max_quality=4, max_detail=1.25, max_psnr_drop=3.0)
    row = lambda drop, detail: {"psnr_fidelity": 25.0, "psnr_realistic": 25.0 - drop, "detail_realistic": detail}
    scores = {"q1": row(0.5, 0.3), "q2": row(1.0, 0.8), "q3": row(2.0, 1.1), "q4": row(2.5, 1.6)}
    assert serving_qualities(scores, st) == [1, 2, 3]           # q4 draws more texture than the photo has
    assert serving_qualities({**scores, "q2": row(3.5, 0.8)}, st) == [1, 3]   # q2 costs too much PSNR
    assert serving_qualities({"q1": row(4.0, 0.3)}, st) == []
    assert head_config(st, [1, 3])["qualities"] == [1, 3] and head_config(st)["qualities"] == [1, 2, 3, 4]


@pytest.fixture
def model_with_head(tmp_path, tiny_model_dir):
    folder = tmp_path / "tiny-test"
    shutil.copytree(tiny_model_dir, folder)
    head = TextureHead(stages=3, channels=8, blocks=1)
    torch.nn.init.normal_(head.out.weight, std=0.05)
    save_head(head, {"channels": 8, "blocks": 1, "qualities": [1]}, folder / "realistic.safetensors")
    return folder


def test_a_model_folder_with_a_head_offers_two_decoders(model_with_head, tiny_model_dir, photo_like):
    codec = VQCodec.load(model_with_head)
    assert codec.decoders == ("fidelity", "realistic") and VQCodec.load(tiny_model_dir).decoders == ("fidelity",)
    data = codec.compress(photo_like, 1)
    fid = np.asarray(codec.decompress(data))
    real = np.asarray(codec.decompress(data, decoder="realistic"))
    assert real.shape == fid.shape and (real != fid).any()
    high = codec.compress(photo_like, 3)      # a quality the head does not serve: the fidelity image
    assert np.array_equal(np.asarray(codec.decompress(high, decoder="realistic")), np.asarray(codec.decompress(high)))
    # quality 1 decoded from the quality-3 file is served; so is each file of a batch at its own quality
    low = codec.decompress(high, quality=1, decoder="realistic")
    assert not np.array_equal(np.asarray(low), np.asarray(codec.decompress(high, quality=1)))
    both = codec.decompress_batch([data, high], decoder="realistic")
    assert np.array_equal(np.asarray(both[0]), real) and np.array_equal(np.asarray(both[1]),
                                                                         np.asarray(codec.decompress(high)))
    # drawn stages past the file's are the fidelity decoder's: the head was trained on coded stage counts
    drawn = codec.decompress(data, detail="sample", seed=1, decoder="realistic")
    assert np.array_equal(np.asarray(drawn), np.asarray(codec.decompress(data, detail="sample", seed=1)))
    with pytest.raises(ValueError, match="has no realistic decoder"):
        VQCodec.load(tiny_model_dir).decompress(data, decoder="realistic")
    with pytest.raises(ValueError, match="decoder must be one of fidelity, realistic"):
        codec.decompress(data, decoder="pretty")


def test_the_command_line_decoder_option_and_info(run, model_with_head, tiny_model_dir, photo_like, tmp_path):
    png, vq = tmp_path / "in.png", tmp_path / "in.vq"
    photo_like.save(png)
    assert run("compress", png, vq, "-q", 1, "--model", model_with_head).exit_code == 0
    result = run("decompress", vq, tmp_path / "r.png", "--decoder", "realistic", "--model", model_with_head)
    assert result.exit_code == 0, result.output
    result = run("decompress", vq, tmp_path / "s.png", "--decoder", "realistic", "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: model tiny-test has no realistic decoder (it offers: fidelity)"
    info = json.loads(run("info", vq, "--json").output)
    assert info["decoders"] == []            # tiny-test is not an installed model: nothing to offer
    assert vqcodec.read_decoders("vqf8-v13")[0] == "fidelity" and vqcodec.read_decoders("../etc") == ()
