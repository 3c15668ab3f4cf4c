"""Config schema, YAML loading, overrides and the one-line validation messages."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab.config as config_module
from cnnlab.config import NAME_MAX, Config, config_from_dict, config_to_dict, dump_yaml, load_config, parse_override, read_yaml
from cnnlab.errors import ConfigError
from cnnlab.experiment import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parent.parent
BASE = {"name": "t", "model": {"name": "cnn"}}


def error_of(overrides, base=BASE) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(base, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_defaults_fill_sections_left_out():
    cfg = config_from_dict(BASE)
    assert cfg.dataset.name == "mnist" and cfg.train.epochs == 1 and cfg.optimizer.name == "sgd"
    assert cfg.transform.normalize == "dataset" and cfg.transform.permute is False


def test_overrides_are_yaml_scalars_at_any_depth():
    cfg = config_from_dict(BASE, ["train.epochs=3", "optimizer.lr=0.05", "transform.shift.dx=-2", "transform.permute=true", "model.n_feature=8"])
    assert cfg.train.epochs == 3 and cfg.optimizer.lr == 0.05 and cfg.transform.shift.dx == -2
    assert cfg.transform.permute is True and cfg.model.n_feature == 8
    cfg = config_from_dict(BASE, ["model={name: fc, hidden: [1000]}", "optimizer={name: adam, lr: 0.002}"])
    assert cfg.model.hidden == [1000] and cfg.optimizer.name == "adam" and cfg.optimizer.lr == 0.002


def test_switching_optimizer_name_in_a_config_without_optimizer_section():
    """A section the file leaves out starts from what its default sets (the name), not from all of
    SGD's keys, so a dotted optimizer.name gives the other optimizer with its own defaults."""
    for name in ("adam", "rmsprop", "adamw"):
        cfg = config_from_dict(BASE, [f"optimizer.name={name}"])
        assert cfg.optimizer.name == name and cfg.optimizer.lr == type(cfg.optimizer)(name=name).lr
    assert config_from_dict(BASE, ["optimizer.momentum=0.9"]).optimizer.momentum == 0.9  # still SGD


def test_switching_a_sections_kind_in_a_file_gives_the_new_kinds_defaults():
    base = {**BASE, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}}
    for name in ("adam", "rmsprop", "adamw"):  # as for a file without the section (the test above)
        assert config_from_dict(base, [f"optimizer.name={name}"]).optimizer == config_from_dict(BASE, [f"optimizer.name={name}"]).optimizer
    assert config_from_dict(base, ["optimizer.lr=0.2", "optimizer.name=adam"]).optimizer.lr == 0.2  # set beside the switch
    # a key set on purpose beside the switch is still checked, and a typo without a switch still named
    assert "unknown key 'optimizer.momentum'" in error_of(["optimizer.name=adam", "optimizer.momentum=0.9"], base)
    typo = {**BASE, "optimizer": {"name": "sgd", "momentun": 0.9}}
    assert "momentun" in error_of(["optimizer.name=sgd"], typo)  # no switch: nothing is dropped
    assert config_from_dict(base, ["optimizer.name=sgd"]).optimizer.momentum == 0.9
    model = config_from_dict({**BASE, "model": {"name": "cnn", "n_feature": 4}}, ["model.name=fc"]).model
    assert model.name == "fc" and not hasattr(model, "n_feature")
    # the dataset is a plain section with a name, not a choice of kinds: the rest of it stays
    data = {**BASE, "dataset": {"name": "mnist", "data_dir": "/d", "download": False, "train_subset": 100}}
    dataset = config_from_dict(data, ["dataset.name=fashion-mnist"]).dataset
    assert (dataset.name, dataset.data_dir, dataset.download, dataset.train_subset) == ("fashion-mnist", "/d", False, 100)


def test_a_mapping_given_for_a_key_beside_a_switch_is_refused_not_dropped():
    """optimizer.name=adam 'optimizer.betas={a: 1}' printed and trained Adam's default betas: the switch
    kept only the dotted keys below the mapping (optimizer.betas.a), so it dropped the key the user set."""
    assert "optimizer.betas: Input should be a valid tuple" in error_of(["optimizer.name=adam", "optimizer.betas={a: 1}"])
    assert "model.hidden: Input should be a valid list" in error_of(["model.name=fc", "model.hidden={a: 1}"])


def test_override_of_a_default_section_keeps_its_other_defaults():
    cfg = config_from_dict(BASE, ["optimizer.momentum=0.9"])
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.9 and cfg.optimizer.lr == 0.01


def test_dotted_normalize_keys_replace_a_word_the_file_gives_for_it():
    """transform.normalize.mean=... worked where the file left normalize out (its default, dataset),
    but where it said normalize: none or dataset (lenet.yaml, cifar10_5k.yaml) it was refused with
    "transform.normalize is not a section"."""
    set_both = ["transform.normalize.mean=[0.5]", "transform.normalize.std=[0.25]"]
    for word in ("none", "dataset"):
        cfg = config_from_dict({**BASE, "transform": {"normalize": word}}, set_both)
        assert cfg.transform.normalize.mean == [0.5] and cfg.transform.normalize.std == [0.25]
    assert config_from_dict(BASE, set_both).transform == cfg.transform
    # a value that is no word normalize takes stays the file's error
    assert "transform.normalize is not a section" in error_of(set_both, {**BASE, "transform": {"normalize": 3}})
    assert "transform is not a section" in error_of(["transform.permute=true"], {**BASE, "transform": "none"})


def test_a_signed_number_with_a_leading_dot_is_a_number(tmp_path):
    """YAML 1.1 (PyYAML) reads .5 as a number but -.5 and +.5 as text: optimizer.lr=+.05 and mean: [-.5]
    were refused as "Input should be a valid number"; YAML 1.2 reads all three as numbers."""
    for text, value in [(".5", 0.5), ("-.5", -0.5), ("+.5", 0.5), ("-.5e1", -5.0), ("+.25E-1", 0.025), ("-5", -5), ("+5", 5), ("5", 5)]:
        assert parse_override(f"a={text}") == ("a", value) and type(parse_override(f"a={text}")[1]) is type(value), text
    assert parse_override("a=-.") == ("a", "-.") and parse_override("a=-.x") == ("a", "-.x")
    assert config_from_dict(BASE, ["optimizer.lr=+.05"]).optimizer.lr == 0.05
    (tmp_path / "c.yaml").write_text("model: {name: fc}\ntransform: {normalize: {mean: [-.5], std: [+.25]}}\n")
    assert load_config(tmp_path / "c.yaml").transform.normalize.model_dump() == {"mean": [-0.5], "std": [0.25]}
    assert "'-.5'" in dump_yaml({"description": "-.5"})  # the text stays text when written


def test_a_layer_too_wide_for_torch_is_refused_in_the_config():
    """model.n_feature=99999999999999999999 passed the schema and ended in a traceback in torch
    ("Overflow when unpacking long long"); 2**62 was told it "cannot take inputs of shape (1, 28, 28)"."""
    for overrides in (["model.n_feature=99999999999999999999"], ["model.n_feature=4611686018427387904"],
                      ["model={name: fc, hidden: [8, 99999999999999999999]}"], ["dataset.name=cifar10", "model={name: fastnet, widths: [2097152]}"]):
        assert "units or channels a layer (got " in error_of(overrides), overrides
    assert config_from_dict(BASE, ["model.n_feature=1048576"]).model.n_feature == 2**20
    stored = config_from_dict(BASE, ["model={name: fc, hidden: [8]}"]).model_dump()
    stored["model"]["hidden"] = [2**20 + 1]  # an earlier cnnlab's run (820 million weights on MNIST) stays resumable
    assert Config.model_validate(stored, context={"stored": True}).model.hidden == [2**20 + 1]


def test_random_grayscale_on_gray_images_is_refused():
    """MNIST's images have one channel: grayscale=1.0 was accepted and changed nothing."""
    assert error_of(["transform.augment.grayscale=1.0"]).endswith(
        "transform.augment.grayscale turns colour images gray; mnist's are gray already (it would do nothing)")
    assert "fashion-mnist's are gray already" in error_of(["dataset.name=fashion-mnist", "transform.augment.grayscale=0.1"])
    assert config_from_dict(BASE, ["dataset.name=cifar10", "transform.augment.grayscale=0.1"]).transform.augment.grayscale == 0.1
    stored = config_from_dict(BASE, ["transform.augment.grayscale=0"]).model_dump()
    stored["transform"]["augment"]["grayscale"] = 0.5  # an earlier cnnlab's run stays resumable
    assert Config.model_validate(stored, context={"stored": True}).transform.augment.grayscale == 0.5


@pytest.mark.parametrize("normalize", ["{mean: [0.5], std: [1e-50]}", "{mean: [1e39], std: [1]}", "{mean: [0], std: [1e39]}"])
def test_normalize_values_float32_cannot_hold_are_refused(normalize):
    """std 1e-50 is 0 in float32 and mean 1e39 is inf: the run stopped with 'the loss became nan ...
    (try a lower learning rate)', which blamed the learning rate."""
    assert "mean and std must fit float32" in error_of([f"transform.normalize={normalize}"])


def test_parse_override():
    assert parse_override("a.b=1e-3") == ("a.b", 1e-3)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=none") == ("a", "none")
    for bad in ["train.epochs", "=3", ".x=1", "a..b=1"]:
        with pytest.raises(ConfigError):
            parse_override(bad)



def test_an_override_of_a_list_item_says_to_set_the_list():
    """model.hidden.0=5 was told "'model.hidden.0' is not a dotted key like train.epochs"."""
    assert error_of(["model.hidden.0=5"]) == "override 'model.hidden.0=5': a key names fields, not list positions; set a list whole, e.g. model.hidden=[16, 16]"
    assert "not list positions" in error_of(["optimizer.betas.1=0.9"])
    assert "not list positions" in error_of(["train.epochs.0=1"])  # not "train.epochs=[...]": epochs is no list
    assert "'train..epochs' is not a dotted key" in error_of(["train..epochs=3"])

def test_an_empty_section_name_is_missing_not_the_name_none():
    """optimizer.name= said "unknown optimizer 'None'"."""
    assert error_of(["optimizer.name="]).endswith("optimizer: missing 'name'; valid names: 'sgd', 'adam', 'adamw', 'rmsprop'")
    assert "unknown optimizer 'foo'" in error_of(["optimizer.name=foo"])


def test_an_override_value_holding_a_comment_is_refused_not_cut():
    """YAML drops ' #...' as a comment: description=run #5 was 'run', dataset.data_dir=#2 null."""
    assert "YAML drops '#5 of 8' as a comment; leave it out, or quote a text that holds it: description='run #5 of 8'" in error_of(["description=run #5 of 8"])
    assert "YAML drops '#2'" in error_of(["dataset.data_dir=#2"])
    assert "model.hidden='[4] # it''s wide'" in error_of(["model.hidden=[4] # it's wide"])
    assert config_from_dict(BASE, ["description=run#5", "reported.source='Table 2 #3'"]).reported.source == "Table 2 #3"


def test_numbers_mean_what_they_read_not_yaml_1_1s_octal_or_base_60(tmp_path):
    """YAML 1.1 (PyYAML) reads 0042 as octal (34) and 1:30 as base 60 (90): a seed or an epoch count
    that is silently another number. They are 42 and the text 1:30, as in YAML 1.2."""
    cfg = config_from_dict(BASE, ["seed=0042", "train.batch_size=010", "description=12:30", "transform.shift.dx=-0_10"])
    assert (cfg.seed, cfg.train.batch_size, cfg.description, cfg.transform.shift.dx) == (42, 10, "12:30", -10)
    assert "train.epochs: Input should be a valid integer (got '1:30')" in error_of(["train.epochs=1:30"])
    assert "optimizer.lr: Input should be a valid number" in error_of(["optimizer.lr=0:0.5"])
    (tmp_path / "c.yaml").write_text("model: {name: fc}\nseed: 0755\ntrain: {epochs: 1:0}\n")
    with pytest.raises(ConfigError, match="train.epochs: Input should be a valid integer"):
        load_config(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml", ["train.epochs=2"]).seed == 755
    assert config_from_dict(BASE, ["seed=0x1F", "train.epochs=1_000"]).seed == 31  # other bases are written out


def test_a_leading_zero_integer_is_decimal_with_any_digits(tmp_path):
    """seed: 0042 was 42 but seed: 0089 (no octal digits, so YAML 1.1 text) was refused as text: both
    are decimal, as YAML 1.2's core schema reads them, in files and overrides alike. What other forms
    mean is unchanged: quoted is text, 007.5 a float, 0x1F hex; 0o17 stays text (YAML 1.1 has no 0o)."""
    cfg = config_from_dict(BASE, ["seed=0089", "train.batch_size=+009", "transform.shift.dx=-0_9", "optimizer.lr=007.5"])
    assert (cfg.seed, cfg.train.batch_size, cfg.transform.shift.dx, cfg.optimizer.lr) == (89, 9, -9, 7.5)
    (tmp_path / "c.yaml").write_text("model: {name: fc}\nseed: 0089\ntrain: {epochs: 08}\ndescription: '0089'\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.seed, cfg.train.epochs, cfg.description) == (89, 8, "0089")
    cfg = config_from_dict(BASE, ["description='0089'", "seed=0x1F"])
    assert (cfg.description, cfg.seed) == ("0089", 31)
    assert "seed: Input should be a valid integer (got '0o17')" in error_of(["seed=0o17"])
    assert "seed: Input should be a valid integer (got '0089')" in error_of(["seed='0089'"])
    # a text that now reads as a number is written quoted, so a run's config.yaml reads back as it was
    (tmp_path / "0089.yaml").write_text("model:\n  name: fc\n")
    cfg = load_config(tmp_path / "0089.yaml")
    (tmp_path / "config.yaml").write_text(dump_yaml(config_to_dict(cfg)))
    assert cfg.name == "0089" and load_config(tmp_path / "config.yaml", stored=True) == cfg


def test_a_run_an_earlier_cnnlab_wrote_keeps_a_leading_zero_text(tmp_path):
    """Before 0089 was the number 89, the dumper wrote the text 0089 bare (YAML 1.1 reads it as text): a
    run named 0089 (its config 0089.yaml) could then no longer be resumed or shown ('name: Input should
    be a valid string (got 89)'). A file cnnlab wrote reads it as the text; a config given now, as 89."""
    old = "name: 0089\nseed: 0042\ndescription: 0_8\nmodel: {name: fc}\n"  # as dumped before, bare; 0042 as edited by hand
    (tmp_path / "config.yaml").write_text(old)
    cfg = load_config(tmp_path / "config.yaml", stored=True)
    assert (cfg.name, cfg.description, cfg.seed) == ("0089", "0_8", 42)  # 0042 was always 42 (1.1 octal had no 8 or 9)
    assert read_yaml(tmp_path / "config.yaml", stored=True)["name"] == "0089"
    assert read_yaml(tmp_path / "config.yaml")["name"] == 89  # a config given now: the number, as YAML 1.2 reads it
    (tmp_path / "config.yaml").write_text(dump_yaml(config_to_dict(cfg)))  # and as cnnlab writes it now
    assert load_config(tmp_path / "config.yaml", stored=True) == cfg == load_config(tmp_path / "config.yaml")


def test_a_run_an_earlier_cnnlab_wrote_keeps_an_exponent_text(tmp_path):
    """Before 1e5 was a number (the dumper quotes it since), a run named 1e5 (its config 1e5.yaml) had
    name: 1e5 written bare, YAML 1.1's text: it could no longer be resumed ('name: Input should be a
    valid string (got 100000.0)'). A file cnnlab wrote reads it as the text, its own floats as floats."""
    old = "name: 1e5\nseed: 0\ndescription: 2.5e3\nmodel: {name: fc}\noptimizer: {name: sgd, lr: 1.0e-05}\n"  # as dumped before
    (tmp_path / "config.yaml").write_text(old)
    cfg = load_config(tmp_path / "config.yaml", stored=True)
    assert (cfg.name, cfg.description, cfg.optimizer.lr) == ("1e5", "2.5e3", 1e-05)
    assert read_yaml(tmp_path / "config.yaml")["name"] == 100000.0  # a config given now: the number
    (tmp_path / "config.yaml").write_text(dump_yaml(config_to_dict(cfg)))  # and as cnnlab writes it now
    assert load_config(tmp_path / "config.yaml", stored=True) == cfg == load_config(tmp_path / "config.yaml")


def test_a_plain_equals_sign_is_text(tmp_path):
    """YAML 1.1 reads a plain = as its "value key", which PyYAML's safe loader cannot build: a key `=:`
    or a value = ended in "could not determine a constructor". It is the text =, as in YAML 1.2."""
    (tmp_path / "c.yaml").write_text("model: {name: fc, =: 2}\n=: 1\ndescription: =\n")
    assert read_yaml(tmp_path / "c.yaml") == {"model": {"name": "fc", "=": 2}, "=": 1, "description": "="}
    assert config_from_dict(BASE, ["description=="]).description == "="


def test_a_config_named_like_a_number_reads_back_as_written(tmp_path):
    # a run's config.yaml is dumped by PyYAML, which writes the string 1e5 bare (YAML 1.1 reads it as a
    # string), and read back by cnnlab's loader, which reads a bare 1e5 as a number: it must be quoted
    (tmp_path / "1e5.yaml").write_text("model:\n  name: fc\n")
    cfg = load_config(tmp_path / "1e5.yaml")
    (tmp_path / "config.yaml").write_text(dump_yaml(config_to_dict(cfg)))
    assert load_config(tmp_path / "config.yaml", stored=True) == cfg


def test_unknown_keys_say_where_and_suggest():
    assert "unknown key 'model.n_featur'; did you mean 'model.n_feature'?" in error_of(["model.n_featur=3"])
    assert "unknown key 'trian'; did you mean 'train'?" in error_of(["trian.epochs=3"])
    assert "did you mean 'transform.augment.hflip'" in error_of(["transform.augment.flip=true"])
    # a key given without its section: the README's own crop_padding=3 was answered with the top-level keys
    assert "unknown key 'crop_padding'; did you mean 'transform.augment.crop_padding'?" in error_of(["crop_padding=3"])
    assert "unknown key 'transform.crop_padding'; did you mean 'transform.augment.crop_padding'?" in error_of(["transform.crop_padding=3"])
    assert "unknown key 'lr'; did you mean 'optimizer.lr'?" in error_of(["lr=0.1"])


def test_a_key_without_its_section_is_suggested_only_where_this_config_has_it():
    """hidden=[100] on a cnn was answered "did you mean 'model.hidden'?", a key of the fc net only,
    which the cnn then refused in turn; the same for another optimizer's or schedule's keys."""
    fc = {"name": "t", "model": {"name": "fc"}}
    assert "unknown key 'hidden'; valid keys here: name, seed" in error_of(["hidden=[100]"])
    assert "unknown key 'hidden'; did you mean 'model.hidden'?" in error_of(["hidden=[100]"], fc)
    assert "unknown key 'n_feature'; valid keys here" in error_of(["n_feature=3"], fc)
    assert "unknown key 'eps'; valid keys here" in error_of(["eps=1e-6"])  # sgd, the default optimizer
    assert "unknown key 'eps'; did you mean 'optimizer.eps'?" in error_of(["optimizer.name=adam", "eps=1e-6"])
    assert "unknown key 'gamma'; valid keys here" in error_of(["gamma=0.5"])  # no schedule
    assert "unknown key 'gamma'; did you mean 'schedule.gamma'?" in error_of(["schedule.name=step", "schedule.step_size=1", "gamma=0.5"])


def test_wrong_values_name_the_key():
    assert error_of(["train.epochs=-1"]).startswith("config, override train.epochs=-1: train.epochs:")
    assert "train.epochs" in error_of(["train.epochs=abc"])
    assert "optimizer.lr" in error_of(["optimizer.lr=0"])
    assert "train.batch_size" in error_of(["train.batch_size=0"])
    assert "shift" in error_of(["transform.shift.dx=28"])
    assert "valid names" in error_of(["model.name=resnet50"]) and "'lenet'" in error_of(["model.name=resnet50"])
    assert "'cifar10'" in error_of(["dataset.name=cifar"])
    assert "auto, cpu, cuda" in error_of(["device=tpu"])
    assert "valid names" in error_of(["optimizer.name=adagrad"])
    assert "valid names: 'step', 'cosine'" in error_of(["schedule.warmup_epochs=1"])  # an optional section


@pytest.mark.parametrize(("text", "shown"), [("42\n", "42"), ("- a\n- b\n", "a list"), ("just words\n", "'just words'"), ("true\n", "true")])
def test_a_config_that_is_not_a_mapping_says_what_it_is_in_words(tmp_path, text, shown):
    """A file holding 42 was 'not a int', one holding words 'not a str': Python's type names."""
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        read_yaml(tmp_path / "c.yaml")
    assert str(e.value) == f"{tmp_path / 'c.yaml'}: the config must be a mapping of keys to values, not {shown}"


def test_a_pair_given_too_few_values_says_how_many_it_takes():
    """optimizer.betas=[0.9] said 'optimizer.betas.1: Field required': a key the user never wrote."""
    assert error_of(["optimizer.name=adam", "optimizer.betas=[0.9]"]) == "config, override optimizer.betas=[0.9]: optimizer.betas: takes 2 values, not 1 (got [0.9])"
    assert error_of(["optimizer.name=adamw", "optimizer.betas=[]"]) == "config, override optimizer.betas=[]: optimizer.betas: takes 2 values, not 0 (got [])"


def test_an_empty_value_is_named_as_such():
    """train.epochs= (or `epochs:` left empty in a file) said only 'Input should be a valid integer'."""
    assert error_of(["train.epochs="]) == "config, override train.epochs=: train.epochs: Input should be a valid integer (got no value)"
    assert error_of(["train=~"]).endswith("not empty; leave it out for its defaults")
    assert config_from_dict(BASE, ["train.max_steps=", "schedule="]).train.max_steps is None  # where null is a value


def test_a_rate_or_probability_takes_a_number_not_yes_or_a_string():
    """transform.augment.grayscale: yes was probability 1.0 (every image gray), weight_decay=true 1.0,
    and a quoted lr: '0.1' a number, where a count (train.epochs: '3') was already refused."""
    for bad, typed in [("transform.augment.grayscale=yes", "'yes'"), ("optimizer.weight_decay=true", "true"), ("transform.augment.mixup=on", "'on'")]:
        assert error_of([bad]) == f"config, override {bad}: {bad.split('=')[0]}: Input should be a valid number (got {typed})"
    assert error_of(["reported.test_acc=no"]) == "config, override reported.test_acc=no: reported.test_acc: Input should be a valid number (got 'no')"
    assert "optimizer.lr: Input should be a valid number (got '0.1')" in error_of(["optimizer.lr='0.1'"])
    assert "optimizer.betas.0: Input should be a valid number (got true)" in error_of(["optimizer.name=adam", "optimizer.betas=[true, 0.9]"])
    assert "transform.normalize.mean.0" in error_of(["transform.normalize={mean: [true], std: [1]}"])
    cfg = config_from_dict(BASE, ["optimizer.lr=1", "transform.augment.grayscale=0", "optimizer.momentum=0.9"])  # whole numbers are numbers
    assert (cfg.optimizer.lr, cfg.transform.augment.grayscale, cfg.optimizer.momentum) == (1.0, 0.0, 0.9)


def test_yes_no_on_and_off_are_the_words_typed_and_switches_take_them(tmp_path):
    """YAML 1.1 reads yes/no/on/off as booleans: transform.augment.grayscale=yes was refused with
    '(got True)', a value never typed, and description=yes as not a string. They stay words, as in
    YAML 1.2; a switch (a bool key) still reads yes and on as true, no and off as false."""
    assert "transform.shift.mode: must be one of 'roll' or 'zero' (got 'on')" in error_of(["transform.shift.mode=on"])
    assert "train.epochs: Input should be a valid integer (got 'Yes')" in error_of(["train.epochs=Yes"])
    cfg = config_from_dict(BASE, ["train.compile=yes", "dataset.download=OFF", "transform.permute=On", "train.checkpoint=no", "description=yes"])
    assert (cfg.train.compile, cfg.dataset.download, cfg.transform.permute, cfg.train.checkpoint, cfg.description) == (True, False, True, False, "yes")
    (tmp_path / "c.yaml").write_text("model: {name: fc}\ndataset: {name: cifar10}\ndescription: no\ntransform: {augment: {hflip: yes, grayscale: off}}\n")
    with pytest.raises(ConfigError, match=r"transform.augment.grayscale: Input should be a valid number \(got 'off'\)$"):
        load_config(tmp_path / "c.yaml")
    cfg = load_config(tmp_path / "c.yaml", ["transform.augment.grayscale=0.5"])
    assert (cfg.description, cfg.transform.augment.hflip) == ("no", True)
    (tmp_path / "config.yaml").write_text(dump_yaml(config_to_dict(cfg)))  # written quoted: an older cnnlab reads it as text too
    assert "description: 'no'" in (tmp_path / "config.yaml").read_text() and load_config(tmp_path / "config.yaml", stored=True) == cfg
    # a word that names no kind of a section is not offered as one (schedule.name=off)
    assert error_of(["schedule=sometimes"]) == ("config, override schedule=sometimes: schedule: a section, not 'sometimes'; to choose one by name: "
                                                "schedule.name=NAME, one of 'step', 'cosine', 'onecycle', 'inverse_time'")


def test_off_for_a_section_that_may_be_left_out_says_null():
    """schedule=off and schedule=none offered schedule.name=NAME, schedule=false said 'Input should be
    a valid dictionary'; a section that may be left out takes null."""
    for value, shown in (("off", "'off'"), ("None", "'None'"), ("no", "'no'"), ("false", "false"), ("0", "0")):
        assert error_of([f"schedule={value}"]) == f"config, override schedule={value}: schedule: a section, not {shown}; for no schedule: schedule=null (or leave it out)"
    assert error_of(["reported=off"]).endswith("for no reported: reported=null (or leave it out)")
    assert config_from_dict(BASE, ["schedule=null"]).schedule is None
    # a section every run has is still a section to name
    assert "optimizer.name=NAME, one of 'sgd'" in error_of(["optimizer=none"])


def test_a_kind_given_for_its_section_says_to_set_the_name():
    """model=fc was 'model: Input should be a valid dictionary or object to extract fields from'."""
    assert error_of(["model=fc"]) == "config, override model=fc: model: a section, not 'fc'; to choose one by name: model.name=fc"
    for key, name in (("optimizer", "adam"), ("schedule", "cosine"), ("dataset", "cifar10"), ("loss", "bce")):
        assert f"{key}: a section, not '{name}'; to choose one by name: {key}.name={name}" in error_of([f"{key}={name}"])
    assert "train: a section of keys (epochs, batch_size, " in error_of(["train=fast"])  # a section without a name


def test_a_section_given_nothing_a_number_or_a_list_says_it_is_a_section():
    """`dataset:` with its keys commented out, train=5 or transform.shift=3 said 'Input should be a valid
    dictionary or instance of DatasetConfig', a class the user never wrote."""
    assert error_of(["dataset=null"]) == ("config, override dataset=null: dataset: a section of keys (name, data_dir, download, train_subset, test_subset), "
                                          "not empty; leave it out for its defaults")
    assert error_of(["transform.shift=3"]) == "config, override transform.shift=3: transform.shift: a section of keys (dx, dy, mode), not 3; leave it out for its defaults"
    assert error_of(["reported=[1]"]).startswith("config, override reported=[1]: reported: a section of keys (test_acc, test_acc_low, test_acc_permuted, source), not a list;")
    assert error_of(["loss=5"]).startswith("config, override loss=5: loss: a section, not 5; to choose one by name: loss.name=NAME, one of 'cross_entropy'")
    assert error_of(["optimizer=[1]"]).startswith("config, override optimizer=[1]: optimizer: a section, not a list; to choose one by name: optimizer.name=NAME")


def test_a_config_without_a_model_says_to_give_model_name():
    """No model section was 'model: Field required'; `model:` with nothing 'model: Input should be a valid dictionary ...'."""
    expected = "config: model: missing; give model.name, one of " + ", ".join(map(repr, config_module.model_names()))
    assert expected.startswith("config: model: missing; give model.name, one of 'fc', 'cnn', 'lenet', ")
    assert error_of([], {"name": "t"}) == expected
    assert error_of(["model=null"]) == expected.replace("config: ", "config, override model=null: ")
    assert error_of(["optimizer=null"]) == "config, override optimizer=null: optimizer: missing; give optimizer.name, one of 'sgd', 'adam', 'adamw', 'rmsprop'"


def test_shift_limit_depends_on_the_dataset():
    config_from_dict({**BASE, "dataset": {"name": "cifar10"}}, ["transform.shift.dx=31"])
    assert "must be smaller than the 28x28 image" in error_of(["transform.shift.dx=28"])


def test_test_time_augmentation_refuses_permuted_pixels():
    config_from_dict(BASE, ["train.tta=flip"])
    config_from_dict(BASE, ["transform.permute=true"])
    for tta in ("flip", "flip_translate"):
        assert "transform.permute" in error_of(["transform.permute=true", f"train.tta={tta}"])


def test_file_errors(tmp_path):
    cases = {"missing.yaml": None, "empty.yaml": "", "list.yaml": "- a\n- b\n", "bad.yaml": "name: [unclosed\n"}
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert str(e.value) and "\n" not in str(e.value)


def test_yaml_nested_too_deeply_is_one_line(tmp_path):
    """PyYAML's parser recurses per level: 500 nested lists ended in a RecursionError traceback. As
    deep as the recursion limit, which torch.compile raises to 2000 in a process once it compiles a
    graph (500 levels then parse, and the test depended on which tests ran before it)."""
    levels = sys.getrecursionlimit()
    deep = "[" * levels + "]" * levels
    (tmp_path / "deep.yaml").write_text(f"model: {{name: fc}}\ndescription: {deep}\n")
    with pytest.raises(ConfigError, match="deep.yaml: not valid YAML: nested too deeply"):
        load_config(tmp_path / "deep.yaml")
    assert "the value is not valid YAML" in error_of([f"description={deep}"])


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch " + str(tmp_path / "pwned") + "']\nmodel: {name: cnn}\n")
    with pytest.raises(ConfigError):
        load_config(path)
    assert not (tmp_path / "pwned").exists()


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my_exp.yaml"
    path.write_text("model: {name: fc}\n")
    assert load_config(path).name == "my_exp"
    assert isinstance(load_config(path), Config)


def test_a_name_too_long_for_a_run_directory_is_refused_before_anything_runs(tmp_path):
    """A 230-letter name trained (its directory's name just fit 255 bytes) but failed a study's cells
    and a sweep's trials late, after their directories were made, with a --resume that failed again;
    300 letters were refused only when the run directory was made, torch and the data loaded."""
    path = tmp_path / "exp.yaml"
    path.write_text("model: {name: fc}\n")
    assert load_config(path, [f"name={'n' * NAME_MAX}"]).name == "n" * NAME_MAX
    with pytest.raises(ConfigError, match=f"name: at most {NAME_MAX} characters \\(got 101\\)"):
        load_config(path, [f"name={'n' * (NAME_MAX + 1)}"])
    stored = tmp_path / "run_config.yaml"  # a run an earlier cnnlab made so stays resumable
    stored.write_text(f"name: {'n' * 200}\nmodel: {{name: fc}}\n")
    assert len(load_config(stored, stored=True).name) == 200
    long_file = tmp_path / f"{'f' * 150}.yaml"  # a name taken from a file's is cut to fit
    long_file.write_text("model: {name: fc}\n")
    assert load_config(long_file).name == "f" * NAME_MAX


def rates_of(schedule: dict) -> list[float]:
    """The rate each of 20 steps trains with (lr 0.1, 10 steps per epoch, 2 epochs)."""
    cfg = config_from_dict({**BASE, "optimizer": {"name": "sgd", "lr": 0.1}, "schedule": schedule, "train": {"epochs": 2}})
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 1))
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=10)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_onecycle_never_goes_above_the_peak_rate():
    """A warm-up whose end falls between two steps (0.23 of 20 steps = 4.6) tops out at lr."""
    rates = rates_of({"name": "onecycle", "pct_start": 0.23, "start_ratio": 0.2, "end_ratio": 0.07})
    assert max(rates) == pytest.approx(0.1) and rates.index(max(rates)) == 4
    assert rates[:5] == sorted(rates[:5]) and rates[4:] == sorted(rates[4:], reverse=True)
    assert 0.007 < rates[-1] < 0.015  # the decay ends near end_ratio x lr (0.007 after the last step)


@pytest.mark.parametrize(
    "schedule, expected",
    [  # lr 0.1, 10 steps per epoch, 2 epochs; the rate each of the steps 0, 5, 10, 19 trains with
        ({"name": "step", "step_size": 1, "gamma": 0.5}, [0.1, 0.1, 0.05, 0.05]),
        ({"name": "cosine"}, [0.1, 0.1 * (1 + math.cos(math.pi * 5 / 20)) / 2, 0.05, 0.1 * (1 + math.cos(math.pi * 19 / 20)) / 2]),
        ({"name": "onecycle", "pct_start": 0.5}, [0.01, 0.06, 0.1, 0.01]),
        ({"name": "onecycle", "pct_start": 0.5, "start_ratio": 0.2, "end_ratio": 0.1}, [0.028, 0.068, 0.1, 0.019]),
        ({"name": "inverse_time", "decay": 0.1}, [0.1, 0.1 / 1.5, 0.1 / 2.0, 0.1 / 2.9]),
    ],
    ids=lambda v: v["name"] if isinstance(v, dict) else "",
)
def test_schedules_set_the_rate_of_every_step(schedule, expected):
    rates = rates_of(schedule)
    assert [rates[i] for i in (0, 5, 10, 19)] == pytest.approx(expected)


def test_yaml_merge_keys_load_and_a_key_of_its_own_wins(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("name: merge\nmodel: {name: fc}\nshared: &train {epochs: 2, batch_size: 32}\n"
                    "train:\n  <<: *train\n  batch_size: 16\n")
    data = read_yaml(path)
    assert data["train"] == {"epochs": 2, "batch_size": 16}


def test_a_key_typed_in_capitals_is_named_as_typed():
    """pydantic's names for union members were told from keys by a capital letter: Train.Epochs=3
    ended in a traceback, and train.Epochs=3 in "unknown key 'train'; did you mean 'train'?"."""
    assert "unknown key 'Train'; did you mean 'train'?" in error_of(["Train.Epochs=3"])
    assert "unknown key 'train.Epochs'; did you mean 'train.epochs'?" in error_of(["train.Epochs=3"])
    assert "unknown key 'optimizer.LR'; did you mean 'optimizer.lr'?" in error_of(["optimizer.name=adam", "optimizer.LR=0.1"])
    assert "unknown key 'transform.Augment'; did you mean 'transform.augment'?" in error_of(["transform.Augment.hflip=true"])
    # a hyphen for an underscore, as command-line options spell words: was "'train.max-steps' is not a dotted key"
    assert "unknown key 'train.max-steps'; did you mean 'train.max_steps'?" in error_of(["train.max-steps=5"])
    assert "unknown key 'Config'; valid keys here: name, seed" in error_of([], {**BASE, "Config": 1})  # a class's name
    # the names pydantic adds are still left out
    assert error_of(["transform.normalize={mean: [0.5], sd: [0.2]}"]).startswith(
        "config, override transform.normalize={mean: [0.5], sd: [0.2]}: unknown key 'transform.normalize.sd'")


# what `cnnlab train CONFIG --print-config` prints, given back as CONFIG, must print the same again
ROUND_TRIP_OVERRIDES = {
    "as_shipped": [],
    "overridden": ["optimizer.name=adam", "optimizer.lr=1e-4", "train.epochs=3", "schedule={name: cosine, warmup_epochs: 0.5}",
                   "seed=-1", "description='1e5: yes # no'", "dataset.data_dir='2e3'", "reported={test_acc: 0.5, source: 'on'}"],
}


@pytest.mark.parametrize("overrides", ROUND_TRIP_OVERRIDES.values(), ids=ROUND_TRIP_OVERRIDES.keys())
@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_a_printed_config_loads_back_as_the_same_config(path, overrides, tmp_path):
    printed = dump_yaml(config_to_dict(load_config(path, overrides)))  # as train --print-config prints it
    (tmp_path / "printed.yaml").write_text(printed)
    assert dump_yaml(config_to_dict(load_config(tmp_path / "printed.yaml"))) == printed


def test_merged_mappings_give_a_key_as_yaml_says(tmp_path):
    """The first merged mapping that gives a key wins (`<<: [*a, *b]`: a's), after the mapping's own.
    PyYAML's own merging let the first or the last win, by whether Python shares the key's string."""
    path = tmp_path / "merge.yaml"
    path.write_text("short: &short {epochs: 2, batch_size: 32}\nlong: &long {epochs: 9, batch_size: 64, max_steps: 5}\n"
                    "a: {<<: [*short, *long]}\nb: {<<: [*long, *short], batch_size: 16}\n"
                    "c: &c {epochs: 3, <<: *long}\nd: {<<: [*c, *short]}\ne: {<<: {epochs: 4}, <<: *long}\n")
    data = read_yaml(path)
    assert data["a"] == {"epochs": 2, "batch_size": 32, "max_steps": 5}
    assert data["b"] == {"epochs": 9, "batch_size": 16, "max_steps": 5}
    assert data["c"] == data["d"] == {"epochs": 3, "batch_size": 64, "max_steps": 5}  # c's own epochs, wherever c is merged
    assert data["e"] == {"epochs": 4, "batch_size": 64, "max_steps": 5}
    path.write_text("f: &f {x: 3, <<: {x: 9}}\ng: {<<: *f}\n")
    assert read_yaml(path)["g"] == {"x": 3}  # f's own x, also where f is merged (PyYAML: 9, for a one-letter key)
    assert data["short"] == {"epochs": 2, "batch_size": 32}  # merging leaves the merged mappings as they are
    path.write_text("train: {<<: {epochs: 1, epochs: 2}}\n")
    with pytest.raises(ConfigError, match=r"line 1, column 25\): the key 'epochs' is given twice"):
        read_yaml(path)  # also in a mapping that is only merged
    path.write_text("a: &a {x: 1, <<: *a}\n")
    assert read_yaml(path) == {"a": {"x": 1}}  # a mapping merging itself gets nothing more


def test_a_config_is_read_from_a_pipe(tmp_path):
    # `cnnlab train <(make_config)` hands cnnlab /dev/fd/63, a pipe: it was "config file not found"
    import os
    import threading

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    text = (Path(__file__).parents[1] / "configs" / "mnist_fc.yaml").read_text()
    writer = threading.Thread(target=fifo.write_text, args=(text,), daemon=True)
    writer.start()
    cfg = load_config(fifo, ["train.epochs=4"])
    writer.join(timeout=10)
    assert (cfg.name, cfg.model.name, cfg.train.epochs) == ("mnist_fc", "fc", 4)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_that_never_ends_is_refused_not_read_until_memory_runs_out(device, monkeypatch):
    monkeypatch.setattr(config_module, "MAX_YAML_BYTES", 1000, raising=False)  # the real limit, read quickly
    with pytest.raises(ConfigError) as e:
        read_yaml(device)
    assert str(e.value) == f"{device}: more than 1,000 bytes: not a config file"


def test_the_articles_number_is_dropped_when_an_override_changes_the_model_or_dataset():
    """`cnnlab train configs/mnist_cnn.yaml model.name=fc` printed '(article: 96.0%)', the CNN's number,
    beside an FC net's accuracy. Another model or dataset is another experiment; other overrides
    (a learning rate) keep the number to compare with, and a reported given on the command line stays."""
    path = ROOT / "configs" / "mnist_cnn.yaml"
    assert load_config(path).reported.test_acc == 0.96
    assert load_config(path, ["optimizer.lr=0.05", "transform.permute=true"]).reported.test_acc == 0.96
    assert load_config(path, ["model.name=fc"]).reported is None
    assert load_config(path, ["dataset.name=fashion-mnist"]).reported is None
    assert load_config(path, ["model.name=fc", "reported.test_acc=0.9"]).reported.test_acc == 0.9


def test_naming_the_dataset_a_config_already_trains_on_keeps_the_articles_number(tmp_path):
    """A file without a dataset section trains on mnist: dataset.name=mnist (a sweep's set too) dropped
    its reported number as if it were another dataset's."""
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: cnn}\nreported: {test_acc: 0.9}\n")
    for overrides in (["dataset.name=mnist"], ["dataset={name: mnist, download: false}"]):
        assert load_config(path, overrides).reported.test_acc == 0.9
    assert load_config(path, ["dataset.name=fashion-mnist"]).reported is None


def test_a_mistake_from_the_command_line_is_named_as_an_override_not_as_the_files(tmp_path):
    """Both walkthroughs of the README found `cnnlab train configs/mnist_cnn.yaml optimzer.lr=0.1` saying
    "configs/mnist_cnn.yaml: unknown key 'optimzer'": the file is fine, the typo was typed. So did a bad
    value typed (optimizer.lr=abc), an override that left a key beside it missing (a mean given where
    the file says `normalize: dataset` needs a std too), or one that broke its section's own check."""
    config = ROOT / "configs/mnist_cnn.yaml"
    cases = {
        "optimzer.lr=0.1": "unknown key 'optimzer'; did you mean 'optimizer'?",
        # a mapping given replaces the section: a typo below it is its own
        "train={epoch: 3}": "unknown key 'train.epoch'; did you mean 'train.epochs'?",
        "optimizer.lr=abc": "optimizer.lr: Input should be a valid number (got 'abc')",
        "optimizer={name: sgd, lr: -1}": "optimizer.lr: Input should be greater than 0 (got -1)",
        "transform.normalize.mean=[0.5]": "transform.normalize.std: Field required",
        "transform.normalize={mean: [0.5], std: [0.2, 0.3]}": "transform.normalize: mean and std must have the same length",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as e:
            load_config(config, ["train.epochs=2", override, "optimizer.momentum=0.9"])
        assert str(e.value) == f"{config}, override {override}: {message}"
    # of several overrides, the one the problem needs, also for a check of the whole config
    for overrides, blamed, message in (
        (["optimizer.nesterov=true", "optimizer.momentum=0.0", "optimizer.lr=0.1"], "optimizer.momentum=0.0",
         "optimizer: nesterov needs a momentum above 0 (e.g. optimizer.momentum=0.9)"),
        (["train.tta=flip", "transform.permute=true", "train.epochs=2"], "transform.permute=true",
         "train.tta flips and moves images, which transform.permute has scrambled: use one or the other"),
        # a section given whole, then a key set in it: the key (the section's value was once changed by it)
        (["optimizer={name: sgd, lr: 0.1}", "optimizer.nesterov=true"], "optimizer.nesterov=true",
         "optimizer: nesterov needs a momentum above 0 (e.g. optimizer.momentum=0.9)"),
    ):
        with pytest.raises(ConfigError) as e:
            load_config(config, overrides)
        assert str(e.value) == f"{config}, override {blamed}: {message}"
    # the file's own mistakes stay the file's, whatever the overrides, also where an override sets
    # another key of the section that fails its check
    for edit, message in ((("train:", "trian:"), "unknown key 'trian'; did you mean 'train'?"),
                          (("lr: 0.01", "lr: abc"), "optimizer.lr: Input should be a valid number (got 'abc')"),
                          (("momentum: 0.5", "momentum: 0.0\n  nesterov: true"), "optimizer: nesterov needs a momentum above 0 (e.g. optimizer.momentum=0.9)"),
                          (("lr: 0.01", "lr: .nan"), "optimizer.lr: Input should be a finite number (got nan)")):  # NaN is NaN
        broken = tmp_path / "broken.yaml"
        broken.write_text(config.read_text().replace(*edit))
        with pytest.raises(ConfigError) as e:
            load_config(broken, ["optimizer.weight_decay=0.0001", "train.epochs=2"])
        assert str(e.value) == f"{broken}: {message}"


def test_a_date_is_the_text_typed(tmp_path):
    """YAML 1.1 reads 2024-05-01 as a date, which no key takes: name=2024-05-01 was refused ('got
    datetime.date(2024, 5, 1)') and an impossible date (2024-02-30) ended in a traceback. It is the
    text typed, as in YAML 1.2, and a config holding it prints and reads back the same."""
    assert config_from_dict(BASE, ["name=2024-05-01", "description=2024-13-45 12:00"]).description == "2024-13-45 12:00"
    (tmp_path / "c.yaml").write_text("model: {name: fc}\nname: 2024-05-01\ndescription: 2024-02-30\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.name, cfg.description) == ("2024-05-01", "2024-02-30")
    (tmp_path / "config.yaml").write_text(dump_yaml(config_to_dict(cfg)))
    assert load_config(tmp_path / "config.yaml", stored=True) == cfg == load_config(tmp_path / "config.yaml")
    assert "seed: Input should be a valid integer (got '2024-05-01')" in error_of(["seed=2024-05-01"])


@pytest.mark.parametrize("value", ["!!int abc", "!!float 1.x", "!!bool maybe", "!!timestamp 2024-02-30", "{a: !!int 0089x}"])
def test_a_value_its_tag_cannot_build_is_one_line(value, tmp_path):
    """PyYAML lets a value its explicit tag cannot build out as a ValueError or KeyError: a traceback."""
    (tmp_path / "c.yaml").write_text(f"model: {{name: fc}}\ndescription: {value}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML \(line 2, column \d+\): '.+' is not a valid !!\w+$"):
        read_yaml(tmp_path / "c.yaml")
    assert error_of([f"description={value}"]) == f"override 'description={value}': the value is not valid YAML"


def test_a_yaml_alias_inside_its_own_anchor_is_one_line(tmp_path):
    """`description: &a [*a]` made a list that holds itself: a 64-line RecursionError traceback from
    the error reporting, and `cnnlab configs` failed for the whole listing."""
    path = tmp_path / "rec.yaml"
    path.write_text("name: r\nmodel: {name: fc}\ndescription: &a [1, {b: *a}]\n")
    with pytest.raises(ConfigError, match="an alias refers to a value it is part of"):
        load_config(path)
    shared = tmp_path / "shared.yaml"  # an alias used twice, outside its anchor, is fine
    shared.write_text("name: s\nmodel: {name: fc, hidden: &h [8, 8]}\nreported: null\ndescription: ok\n")
    assert load_config(shared).model.hidden == [8, 8]



def test_shared_aliases_and_deep_nesting_are_read_once_each(tmp_path):
    """The self-reference check walked the YAML as a tree: 8 levels of 10 aliases each (a 600-byte
    file) took minutes, and 400 nested lists, which PyYAML reads, ended in a RecursionError traceback."""
    levels = ["l0: &l0 [1]"] + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    graph = tmp_path / "graph.yaml"
    graph.write_text("name: g\nmodel: {name: fc}\n" + "\n".join(levels) + "\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: d\nmodel: {name: fc}\ndescription: " + "[" * 400 + "]" * 400 + "\n")
    for path, message in ((graph, "unknown key 'l0'"), (deep, "description: Input should be a valid string")):
        out = subprocess.run([sys.executable, "-m", "cnnlab", "train", str(path), "--print-config"], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)  # (a hang guard: the tree walk took minutes)
        assert out.returncode == 2 and out.stderr == f"error: {path}: {message}" + out.stderr.split(message, 1)[1], out.stderr
        assert len(out.stderr.splitlines()) == 1


def test_an_override_that_holds_itself_is_one_line():
    """`train=&a {x: *a}` ended in a RecursionError traceback."""
    assert error_of(["train=&a {x: *a}"]) == "override 'train=&a {x: *a}': an alias refers to a value it is part of"
