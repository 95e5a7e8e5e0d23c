"""The training loop's own cost: no host synchronisation per step (a GPU would stall at every batch)."""
import pytest
import torch
from conftest import needs_fashion_mnist

from growres.train import TrainConfig, training_function

# every way Python code turns a tensor into a host value (each waits for the device on a GPU)
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def host_reads_of_a_run(tmp_path, monkeypatch, train_images: int) -> int:
    """Count host reads of tensors during one 1-epoch run over ``train_images`` images (batch 50)."""
    count = 0

    def counting(original):
        def read(*args, **kwargs):
            nonlocal count
            count += 1
            return original(*args, **kwargs)
        return read

    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
        training_function(TrainConfig(
            model="growres_resnet14", epochs=1, batch_size=50, max_train_samples=train_images, max_eval_samples=50,
            output_dir=str(tmp_path / f"run-{train_images}"), seed=0,
        ))
    return count


@needs_fashion_mnist
def test_no_host_read_per_training_step(tmp_path, monkeypatch):
    # 2 steps against 8 steps in the epoch: everything read once per epoch (evaluation, metrics, export) is
    # the same in both runs, so any difference is a read per step
    reads = [host_reads_of_a_run(tmp_path, monkeypatch, images) for images in (100, 400)]
    assert reads[0] > 0, "the counter must see the once-per-epoch reads, or it counts nothing"
    assert reads[1] == reads[0], f"{reads[1] - reads[0]} host reads over 6 extra steps"


@pytest.mark.parametrize("steps", [1, 3])
def test_epoch_sums_stay_on_the_device_and_match_the_batches(steps):
    from accelerate import Accelerator

    from growres.runs import RunFolder
    from growres.train import _Run

    run = _Run(RunFolder("unused"), Accelerator(cpu=True))
    generator = torch.Generator().manual_seed(steps)
    expected = torch.zeros(3, dtype=torch.float64)
    for _ in range(steps):
        logits, labels = torch.randn(7, 5, generator=generator), torch.randint(0, 5, (7,), generator=generator)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        run.add_batch(loss, logits, labels)
        expected += torch.tensor([loss.item() * 7, (logits.argmax(-1) == labels).sum().item(), 7], dtype=torch.float64)
    assert run.epoch_sums.device == run.accelerator.device
    torch.testing.assert_close(run.epoch_sums, expected, rtol=0, atol=0)


@needs_fashion_mnist
@pytest.mark.parametrize("channels_last", [True, False])
def test_convolutions_see_channels_last_by_default(tmp_path, channels_last):
    """channels-last is the default layout (the same fp32 math, faster on CPU); --no-channels-last turns it off."""
    layouts = set()  # in training: is each conv's input stored channels-last (and not also plain contiguous)?

    def record(module, args):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            x = args[0]
            layouts.add(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

    flag = {} if channels_last else {"channels_last": False}
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        training_function(TrainConfig(model="growres_resnet14", epochs=1, batch_size=50, max_train_samples=100,
                                      max_eval_samples=50, output_dir=str(tmp_path / "run"), **flag))
    finally:
        handle.remove()
    assert layouts == {channels_last}
