"""The network of SPEC §1: exact parameter counts, edge init, forward/backward vs a per-edge reference loop."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from dagwire import counts, spec as specs
from dagwire.doctor_cases import plain_forward as reference_forward, recording_relu_masks, relative_error
from dagwire.errors import SpecError
from dagwire.model import (
    count_parameters, create_model, load_model, materialise, save_weights, split_members, split_state, stack_members,
)


def random_dag(n, stages, p, seed):
    """A random DAG on n nodes whose every node lies on an input→output path."""
    rng = random.Random(seed)
    edges = {(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < p}
    edges |= {(i, i + 1) for i in range(n - 1)}  # keeps every node live
    return specs.from_edge_list(n, stages, edges)


def test_paper_network_has_exactly_863300_parameters():
    g = specs.complete(60, 3)
    assert g.num_edges == 1770
    assert counts.parameter_count(g, 11) == 863_300
    assert counts.parameter_quadratic(g) == (6990, 1430, 10 + 1770)
    assert count_parameters(create_model(g, 11)) == 863_300


@pytest.mark.parametrize(
    "g, channels",
    [
        (specs.local(60, 3, 10), 11),
        (specs.complete(12, 3), 5),
        (specs.complete(8, 2), 3),
        (random_dag(15, (5, 5, 5), 0.3, 1), 4),
        (specs.from_edge_list(9, (3, 3, 3), [(0, 3), (3, 8)]), 6),  # skips nodes, two reduces
    ],
)
def test_module_parameter_count_equals_closed_form(g, channels):
    assert count_parameters(create_model(g, channels)) == counts.parameter_count(g, channels)


def test_edge_weights_start_at_tanh_one_half():
    model = create_model(specs.complete(6, 2), 2)
    assert torch.allclose(torch.tanh(model.edge_weights), torch.full((15,), 0.5))
    assert model.edge_magnitudes() == pytest.approx([0.5] * 15)


@pytest.mark.parametrize("g", [specs.complete(9, 3), random_dag(12, (4, 4, 4), 0.4, 3), specs.local(12, 3, 2)])
def test_forward_and_gradients_match_reference_loop(g):
    torch.manual_seed(0)
    model = create_model(g, 3).double()
    with torch.no_grad():  # distinct edge weights, so a swapped edge would show
        model.edge_weights.copy_(torch.linspace(-1.5, 1.5, g.num_edges, dtype=torch.float64))
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    got = model(x)
    want = reference_forward(model, x)
    assert torch.allclose(got, want, atol=1e-10)

    grads = torch.autograd.grad(got.square().sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad(want.square().sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-9), name


def test_float32_forward_within_1e5_of_reference():
    torch.manual_seed(1)
    model = create_model(specs.complete(12, 3), 4)
    x = torch.randn(8, 3, 32, 32)
    assert torch.allclose(model(x), reference_forward(model, x), atol=1e-5)


def test_flops_of_complete_dag():
    g = specs.complete(60, 3)
    # conv MACs of nodes and reduce blocks, one MAC per edge element, the head; times 2
    conv = (10 * 3 * 11 * 1024 + 19 * 10 * 121 * 1024 + 20 * 10 * 484 * 256 + 20 * 10 * 1936 * 64
            + 20 * 10 * 11 * 22 * 256 + 20 * 10 * 11 * 44 * 64 + 20 * 10 * 22 * 44 * 64)
    edges = 190 * 11 * 1024 + (20 * 20 + 190) * 22 * 256 + (40 * 20 + 190) * 44 * 64
    assert counts.flops_per_image(g, 11) == 2 * (conv + edges + 44 * 10)


def test_fit_channels_picks_nearest_count():
    g = specs.from_edge_list(12, (4, 4, 4), [(0, 1), (1, 5), (5, 11)])
    target = counts.parameter_count(specs.complete(60, 3), 11)
    c = counts.fit_channels(g, target)
    best = min(range(1, 200), key=lambda ch: abs(counts.parameter_count(g, ch) - target))
    assert c == best
    assert counts.fit_channels(specs.complete(60, 3), 863_300) == 11


def test_materialised_network_equals_masked_full_network(tmp_path):
    torch.manual_seed(2)
    full_spec = specs.complete(12, 3)
    model = create_model(full_spec, 3)
    with torch.no_grad():
        model.edge_weights.normal_()
    keep = [(0, 1), (1, 4), (0, 5), (4, 6), (5, 6), (6, 11), (1, 11)]
    pruned = specs.from_edge_list(12, (4, 4, 4), keep)
    model.eval()
    small = materialise(model, pruned).eval()
    model.set_edge_mask([e in keep for e in full_spec.edges])
    x = torch.randn(5, 3, 32, 32)
    assert torch.allclose(model(x), small(x), atol=1e-5)
    assert count_parameters(small) == counts.parameter_count(pruned, 3) < count_parameters(model)
    # a saved pruned model needs only its graph and its weights
    save_weights(small, tmp_path / "w.pt")
    specs.save(pruned, tmp_path / "g.json")
    again = load_model(specs.load(tmp_path / "g.json"), tmp_path / "w.pt", 3).eval()
    assert torch.equal(again(x), small(x))


def test_node_without_input_is_rejected():
    with pytest.raises(SpecError, match="no input"):
        create_model(specs.from_edge_list(6, (3, 3), [(0, 1), (2, 5)]), 2)


def test_weights_that_do_not_fit_are_one_clear_error(tmp_path):
    save_weights(create_model(specs.complete(6, 2), 2), tmp_path / "w.pt")
    with pytest.raises(SpecError, match="do not fit"):
        load_model(specs.complete(6, 2), tmp_path / "w.pt", 3)


def test_resources_loss_is_sum_of_kept_magnitudes():
    model = create_model(specs.complete(6, 2), 2)
    assert float(model.resources_loss().detach()) == pytest.approx(15 * 0.5)
    model.set_edge_mask([True] * 5 + [False] * 10)
    assert float(model.resources_loss().detach()) == pytest.approx(5 * 0.5)
    assert math.isclose(float(torch.tanh(model.edge_weights[0].detach())), 0.5, rel_tol=1e-6)


def fast_and_reference(g, channels, seed, members=1):
    """The network with its hand-written fast paths and the same network's plain path, with the same weights."""
    torch.manual_seed(seed)
    fast = create_model(g, channels, members=members)
    plain = create_model(g, channels, members=members).use_fast_kernels(False)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize("members", [1, 2])
def test_fast_kernels_match_the_plain_path_outputs_and_gradients(members):
    """In float64 (no oneDNN kernel involved) the two paths agree to rounding."""
    from dagwire.bench import cmnist_like_graph

    for g in (specs.complete(12, 3), cmnist_like_graph(30, 3)):
        fast, ref = fast_and_reference(g, 3, 3, members)
        fast, ref = fast.double(), ref.double()
        with torch.no_grad():
            fast.edge_weights.normal_()
            ref.edge_weights.copy_(fast.edge_weights)
        x = torch.randn(6, 3 * members, 32, 32, dtype=torch.float64)
        a, b = fast(x), ref(x)
        assert relative_error(a, b) < 1e-12
        ga = torch.autograd.grad(a.square().sum(), list(fast.parameters()))
        gb = torch.autograd.grad(b.square().sum(), list(ref.parameters()))
        for (name, _), u, v in zip(fast.named_parameters(), ga, gb):
            assert relative_error(u, v) < 1e-10, name


@pytest.mark.parametrize("threads", [1, 2])
def test_plain_path_in_float32_matches_float64(threads):
    """The case once taken for an upstream bug: with 2 threads one ReLU input of node 6 lands 2e-6
    from 0 and on the other side in float64, which moved every gradient behind it by 2 % (12 % on
    an AVX2 CPU). Given the float32 run's ReLU branches, the float64 truth agrees to rounding."""
    g = specs.complete(12, 3)
    _, plain = fast_and_reference(g, 3, 3)  # the weights of the case seen failing
    with torch.no_grad():
        plain.edge_weights.normal_()
    x = torch.randn(6, 3, 32, 32)
    truth = create_model(g, 3).double()
    truth.load_state_dict(plain.state_dict())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with recording_relu_masks(plain) as masks:
            out = plain(x)
        got = torch.autograd.grad(out.square().sum(), list(plain.parameters()))
    finally:
        torch.set_num_threads(before)
    want = torch.autograd.grad(reference_forward(truth, x.double(), masks[0]).square().sum(),
                               list(truth.parameters()))
    for (name, _), u, v in zip(plain.named_parameters(), got, want):
        assert relative_error(u, v) < 1e-4, name


def test_relu_masks_replay_the_branches_they_recorded():
    torch.manual_seed(2)
    g = specs.complete(6, 2)
    model = create_model(g, 2).double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with recording_relu_masks(model) as masks:
        model(x)
    assert set(masks[0]) == {f"nodes.{j}" for j in range(6)} | {f"reduces.{i}_1" for i in range(3)}
    assert torch.equal(masks[0]["nodes.0"], x > 0)
    # its own branches: the same function; every branch closed: the 3×3 convolutions see only zeros
    assert torch.equal(reference_forward(model, x, masks[0]), reference_forward(model, x))
    closed = {name: torch.zeros_like(m) for name, m in masks[0].items()}
    grads = dict(zip([n for n, _ in model.named_parameters()],
                     torch.autograd.grad(reference_forward(model, x, closed).sum(), list(model.parameters()))))
    assert all(float(v.abs().max()) == 0 for n, v in grads.items() if n.endswith("conv3.weight"))
    assert float(grads["nodes.0.conv1.weight"].abs().max()) > 0


def test_relu_masks_of_member_networks_are_their_channel_blocks():
    torch.manual_seed(3)
    model = create_model(specs.complete(3, 1), 2, members=2)
    x = torch.randn(2, 6, 8, 8)
    with recording_relu_masks(model) as masks:
        model(x)
    assert len(masks) == 2
    assert torch.equal(masks[0]["nodes.0"], x[:, :3] > 0) and torch.equal(masks[1]["nodes.0"], x[:, 3:] > 0)
    assert masks[1]["nodes.1"].shape == (2, 2, 8, 8)


def test_benchmark_reference_matches_the_network():
    """bench's straightforward yardstick computes the same function."""
    from dagwire.bench import ReferenceDagNet

    g = specs.complete(9, 3)
    torch.manual_seed(1)
    fast = create_model(g, 3)
    ref = ReferenceDagNet(g, 3)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(fast(x), ref(x), atol=1e-5)


def test_plan_index_tensors_are_buffers_outside_the_state_dict():
    model = create_model(specs.complete(9, 3), 2)
    buffers = dict(model.named_buffers())
    assert {"plan_gather_1", "plan_inner_4", "plan_out_0"} <= set(buffers)
    assert not any(name.startswith("plan_") for name in model.state_dict())
    assert buffers["plan_gather_0"].numel() == 0  # nothing enters stage 0
    assert buffers["plan_inner_4"].tolist() == [e for e, (i, j) in enumerate(model.spec.edges) if j == 4 and i >= 3]


def test_fast_network_keeps_the_running_statistics_of_aten_batch_norm():
    """The hand-written channels-last batch norm updates running mean/var as nn.BatchNorm2d does."""
    fast, ref = fast_and_reference(specs.complete(6, 2), 3, 4)
    for _ in range(3):
        x = torch.randn(5, 3, 8, 8) * 2 + 1
        fast(x), ref(x)
    ref_state = ref.state_dict()
    for name, value in fast.state_dict().items():
        if "running" in name or "num_batches" in name:
            assert torch.allclose(value, ref_state[name], atol=1e-5, rtol=1e-5), name
    assert int(fast.state_dict()["nodes.1.bn3.num_batches_tracked"]) == 3
    # and evaluation with them (ATen's batch norm in eval mode) agrees too
    x = torch.randn(5, 3, 8, 8)
    assert torch.allclose(fast.eval()(x), ref.eval()(x), atol=1e-5)


def test_cmnist_like_benchmark_graph_is_sparse_and_live():
    from dagwire.bench import cmnist_like_graph

    g = cmnist_like_graph()
    assert g.num_edges == 25 and len(g.active_nodes()) == 12
    create_model(g, 2)  # every active node has an input


@pytest.mark.parametrize("g", [specs.complete(9, 3), random_dag(12, (4, 4, 4), 0.4, 5), specs.local(12, 3, 2)])
def test_members_equal_separate_networks_outputs_and_gradients(g):
    """K networks in one module (--batch-seeds) compute exactly what K separate networks compute."""
    singles = []
    for k in range(3):
        torch.manual_seed(10 + k)
        singles.append(create_model(g, 3).double())
        with torch.no_grad():  # distinct, member-specific edge weights
            singles[-1].edge_weights.copy_(torch.linspace(-1.5, 1.5, g.num_edges, dtype=torch.float64) * (k + 1) / 3)
    stacked = stack_members(singles)
    assert stacked.edge_weights.shape == (3, g.num_edges)
    xs = [torch.randn(4, 3, 16, 16, dtype=torch.float64) for _ in singles]
    stacked_out = stacked(torch.cat(xs, 1)).view(4, 3, 10)
    single_outs = [single(x) for single, x in zip(singles, xs)]
    for k, out in enumerate(single_outs):
        assert torch.allclose(stacked_out[:, k], out, atol=1e-10)
    # Gradients of the summed per-member losses are each member's own gradients.
    targets = [torch.randint(0, 10, (4,)) for _ in singles]
    loss = sum(F.cross_entropy(stacked_out[:, k], t) for k, t in enumerate(targets)) + 0.01 * stacked.resources_loss()
    loss.backward()
    for single, out, t in zip(singles, single_outs, targets):
        (F.cross_entropy(out, t) + 0.01 * single.resources_loss()).backward()
    for k, part in enumerate(split_state({n: p.grad for n, p in stacked.named_parameters()}, 3)):
        for name, p in singles[k].named_parameters():
            assert torch.allclose(part[name], p.grad, atol=1e-10), (k, name)
    # Batch-norm statistics are per member too, and the states split back exactly.
    for k, back in enumerate(split_members(stacked)):
        for name, value in singles[k].state_dict().items():
            assert torch.allclose(back.state_dict()[name].double(), value.double(), atol=1e-12), (k, name)


def test_member_edge_masks_cut_only_their_member():
    g = specs.complete(6, 2)
    torch.manual_seed(0)
    singles = [create_model(g, 2) for _ in range(2)]
    stacked = stack_members(singles).eval()
    keep = [[True] * g.num_edges, [e != 3 for e in range(g.num_edges)]]
    stacked.set_edge_mask(keep)
    singles[1].set_edge_mask(keep[1])
    x = torch.randn(2, 3, 8, 8)
    out = stacked(torch.cat([x, x], 1)).view(2, 2, 10)
    assert torch.allclose(out[:, 0], singles[0].eval()(x), atol=1e-5)
    assert torch.allclose(out[:, 1], singles[1].eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        stacked.set_edge_mask([True] * g.num_edges)


@pytest.mark.slow
def test_compiled_network_matches_eager_outputs_and_gradients():
    """--compile: under torch.compile the network uses plain ops (its hand-written backward is eager-only)."""
    g = specs.complete(6, 2)
    torch.manual_seed(2)
    eager = create_model(g, 2)
    compiled_model = create_model(g, 2)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    F.cross_entropy(compiled(x), y).backward()
    F.cross_entropy(eager(x), y).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_bf16_autocast_stays_close_to_fp32_and_to_aten_batch_norm():
    fast, ref = fast_and_reference(specs.complete(12, 3), 4, 0)
    x = torch.randn(8, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, ref_low = fast(x).float(), ref(x).float()
    full = fast(x)
    assert torch.allclose(low, full, atol=0.03) and not torch.equal(low, full)
    assert torch.allclose(low, ref_low, atol=0.03)


def test_second_backward_through_a_retained_graph_adds_the_same_gradients():
    """The in-stage sums file their gradients per backward pass; a retained graph can be reused."""
    fast, ref = fast_and_reference(specs.complete(6, 2), 2, 5)
    x = torch.randn(3, 3, 8, 8)
    loss = fast(x).square().sum()
    loss.backward(retain_graph=True)
    once = {name: p.grad.clone() for name, p in fast.named_parameters()}
    loss.backward()
    ref(x).square().sum().backward()
    for name, p in fast.named_parameters():
        assert torch.allclose(p.grad, 2 * once[name], atol=1e-6), name
        assert torch.allclose(once[name], dict(ref.named_parameters())[name].grad, atol=1e-5, rtol=1e-4), name
