"""timm's forward_intermediates / prune_intermediate_layers tests (unchanged, from test_models.py) on growres' models.

test_models.py runs its feature-API tests only on the timm modules it names (FEAT_INTER_FILTERS), which growres'
module is not among; here the same test functions run on growres models. Left out: timm's tests of one model
family's quirks, e.g. test_forward_after_prune_intermediate_layers, which is for models without a final norm (it
expects forward_features to end at the last tap, while ours, as timm's ResNetV2, end with the final norm).

The models: growres has one model class, and depth and width change only how many blocks and channels a stage has.
These four cover it: the smallest of each width, one with five blocks a stage, and a multi-level one (it carries a
growth plan); the deep ones (50 and 122 layers) would add minutes, not cases. test_models.py's standard tests run on
all twelve.
"""
import pytest

from . import test_models as timm_tests

GROWRES_MODELS = ['growres_resnet14', 'growres_resnet32', 'growres_wrn14', 'growres_wrn50i']


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_model_forward_intermediates(model_name):
    timm_tests.test_model_forward_intermediates(model_name, batch_size=1)


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_model_forward_intermediates_features(model_name):
    timm_tests.test_model_forward_intermediates_features(model_name, batch_size=1)


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_prune_intermediate_layers_contract(model_name):
    timm_tests.test_prune_intermediate_layers_contract(model_name)


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_prune_intermediate_layers_params_used(model_name):
    timm_tests.test_prune_intermediate_layers_params_used(model_name)


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_prune_intermediate_layers_last_feature(model_name):
    timm_tests.test_prune_intermediate_layers_last_feature(model_name, stop_early_final=True)


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_prune_to_stem_feature(model_name):
    timm_tests.test_prune_to_stem_feature(model_name)


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_forward_intermediates_stop_early_final_norm(model_name):
    timm_tests.test_forward_intermediates_stop_early_final_norm(model_name, model_kwargs={})


@pytest.mark.parametrize('model_name', GROWRES_MODELS)
def test_feature_getter_stage_ends_torchscript(model_name):
    timm_tests.test_feature_getter_stage_ends_torchscript(model_name)
