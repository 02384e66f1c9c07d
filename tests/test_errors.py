"""Every bad input a new user can type, through the real CLI: exit code 2, exactly one line on stderr
that names the offending value, no traceback, and no new FAILED or RUNNING run in the store.

A case is (id, argv, env, what the line must name). Placeholders: {tree} a small class-folder tree;
{tmp} the case's own folder; {baseline}, {generator}, {generator64}, {failed} finished (or, the last,
FAILED) runs of a prepared store; {missing} a run id no store holds; {spec:NAME} a sweep spec file
with the body SPECS[NAME]; {file} a plain file; {empty} an empty folder; {gen_*} folders of generated
images (class folders, a flat folder, an unknown class, a mix of files and folders, an unreadable
image); {t2i} a tiny random text-to-image pipeline saved on disk.
"""
from __future__ import annotations

import shutil

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import invoke

T = ["--preset", "tiny", "--data-dir", "{tree}", "--set", "data.classes=airplane,automobile,bird"]
F = ["--set", "generator.kind=folder"]
G = ["--axis", "generator.kind=oracle", "--storage", "sqlite:///{tmp}/o.db"]
MISSING = "0123456789abcdef0123456789abcdef"

SPECS = {
    "toml": "[space\n",
    "section": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n[scheduler]\ntype = "x"\n',
    "field": '[space."generate.nsamples"]\ntype = "int"\nlow = 10\nhigh = 20\n',
    "fixed": '[space."gan.lr"]\ntype = "float"\nlow = 0.0001\nhigh = 0.001\n',
    "type": '[space."generate.n_samples"]\ntype = "integer"\nlow = 10\nhigh = 20\n',
    "order": '[space."generate.n_samples"]\ntype = "int"\nlow = 20\nhigh = 10\n',
    "log": '[space."pseudolabel.threshold"]\ntype = "float"\nlow = 0.0\nhigh = 0.9\nlog = true\n',
    "end": '[space."pseudolabel.threshold"]\ntype = "float"\nlow = 0.5\nhigh = 1.5\n',
    "option": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\nstep = 2\n',
    "sampler_key": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n[sampler]\nseed = 3\n',
    "sampler": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n[sampler]\ntype = "cmaes"\n',
    "pruner": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n[pruner]\ntype = "hyperband"\n',
    "warmup": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n[pruner]\nwarmup_epochs = "five"\n',
    "lower": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n[pruner]\nlower = "high"\n',
    "startup": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n[sampler]\nn_startup_trials = -1\n',
    "empty": '[sampler]\ntype = "tpe"\n',
    "choices": '[space."classifier.augmentation"]\ntype = "categorical"\nchoices = []\n',
    "choice": '[space."classifier.augmentation"]\ntype = "categorical"\nchoices = ["none", "weird"]\n',
    "numbers": '[space."generate.n_samples"]\ntype = "int"\nlow = "ten"\nhigh = 20\n',
    "table": '[space]\n"generate.n_samples" = 5\n',
    "real_only": '[space."classifier.real_only_epochs"]\ntype = "int"\nlow = 1\nhigh = 10\n',
    "samples": '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 1000\n',
}
SPEC = '[space."generate.n_samples"]\ntype = "int"\nlow = 10\nhigh = 20\n'

CASES = [
    # presets and --set: every field typed and ranged where it enters
    ("unknown-preset", ["config", "--preset", "nope"], {}, "'nope'"),
    ("preset-not-toml", ["config", "--preset", "{tmp}/bad.toml"], {}, "bad.toml"),
    ("preset-missing-file", ["config", "--preset", "{tmp}/missing.toml"], {}, "missing.toml"),
    ("unknown-key", ["config", "--set", "classifier.epochz=3"], {}, "classifier.epochz"),
    ("unknown-section", ["config", "--set", "optimizer.lr=3"], {}, "optimizer.lr"),
    ("not-an-int", ["config", "--set", "classifier.epochs=many"], {}, "'many'"),
    ("not-a-bool", ["config", "--set", "gan.spectral_norm=maybe"], {}, "'maybe'"),
    ("set-without-value", ["config", "--set", "noequals"], {}, "'noequals'"),
    ("zero-epochs", ["config", "--set", "classifier.epochs=0"], {}, "classifier.epochs"),
    ("lr-inf", ["config", "--set", "classifier.lr=inf"], {}, "classifier.lr"),
    ("lr-negative", ["config", "--set", "classifier.lr=-0.1"], {}, "classifier.lr"),
    ("gan-lr-zero", ["config", "--set", "gan.lr=0"], {}, "gan.lr"),
    ("weight-decay-nan", ["config", "--set", "classifier.weight_decay=nan"], {}, "classifier.weight_decay"),
    ("beta1", ["config", "--set", "gan.beta1=5"], {}, "gan.beta1"),
    ("beta2", ["config", "--set", "gan.beta2=-0.1"], {}, "gan.beta2"),
    ("gp-weight", ["config", "--set", "gan.gp_weight=-1"], {}, "gan.gp_weight"),
    ("data-seed", ["config", "--set", "data.seed=-1"], {}, "data.seed"),
    ("generate-seed", ["config", "--set", "generate.seed=-3"], {}, "generate.seed"),
    ("classifier-seed", ["config", "--set", "classifier.seed=-1"], {}, "classifier.seed"),
    ("gan-seed", ["config", "--set", "gan.seed=-2"], {}, "gan.seed"),
    ("threshold", ["config", "--set", "pseudolabel.threshold=1.5"], {}, "pseudolabel.threshold"),
    ("augmentation", ["config", "--set", "classifier.augmentation=autoaugment"], {}, "'autoaugment'"),
    ("gan-loss", ["config", "--set", "gan.loss=lsgan"], {}, "'lsgan'"),
    ("conditional", ["config", "--set", "gan.conditional=yes"], {}, "'yes'"),
    ("pseudolabel-mode", ["config", "--set", "pseudolabel.mode=soft"], {}, "'soft'"),
    ("budget", ["config", "--set", "classifier.budget=time"], {}, "'time'"),
    ("diffaugment", ["config", "--set", "gan.diffaugment=blur"], {}, "blur"),
    ("image-size", ["config", "--set", "data.image_size=48"], {}, "48"),
    ("channels", ["config", "--set", "data.channels=2"], {}, "data.channels"),
    ("test-fraction", ["config", "--set", "data.test_fraction=1"], {}, "data.test_fraction"),
    ("source", ["config", "--set", "data.source=imagenet"], {}, "'imagenet'"),
    ("one-class", ["config", "--set", "data.classes=bird"], {}, "'bird'"),
    ("duplicate-class", ["config", "--set", "data.classes=bird,bird"], {}, "data.classes"),
    ("mixup-alpha", ["config", "--set", "generator.mixup_alpha=0"], {}, "generator.mixup_alpha"),
    ("gp-fraction", ["config", "--set", "gan.gp_fraction=2"], {}, "gan.gp_fraction"),
    ("synthetic-share", ["config", "--set", "classifier.synthetic_share=1"], {}, "classifier.synthetic_share"),
    ("synthetic-weight", ["config", "--set", "classifier.synthetic_weight=-1"], {}, "classifier.synthetic_weight"),
    ("ema", ["config", "--set", "gan.ema=1"], {}, "gan.ema"),
    ("real-only-epochs", ["config", "--set", "classifier.real_only_epochs=99"], {}, "classifier.real_only_epochs"),
    ("checkpoint-epoch", ["config", "--set", "generate.checkpoint_epoch=-2"], {}, "generate.checkpoint_epoch"),
    ("best-without-quality", ["config", "--set", "generate.checkpoint_epoch=-1"], {}, "checkpoint_epoch=-1"),
    ("quality-k", ["config", "--set", "quality.k=0"], {}, "quality.k"),
    ("n-per-class", ["config", "--set", "data.n_per_class=-5"], {}, "data.n_per_class"),
    ("val-per-class", ["config", "--set", "data.val_per_class=-1"], {}, "data.val_per_class"),
    ("temperature", ["config", "--set", "pseudolabel.temperature=0"], {}, "pseudolabel.temperature"),
    ("study-seeds", ["config", "--set", "seeds.count=0"], {}, "seeds.count"),
    ("gan-iterations", ["config", "--set", "gan.iterations=-5"], {}, "gan.iterations"),
    # settings that need the command's context
    ("generator-kind", ["run", *T, "--set", "generator.kind=vae"], {}, "'vae'"),
    ("device", ["run", *T, "--set", "device=tpu"], {}, "'tpu'"),
    ("no-cuda", ["run", *T, "--set", "device=cuda"], {}, "'cuda'"),
    ("filter-unconditional", ["run", *T, "--set", "pseudolabel.mode=filter"], {}, "pseudolabel.mode=filter"),
    ("checkpoint-of-oracle", ["run", *T, "--set", "generator.kind=oracle", "--set", "generate.checkpoint_epoch=3"], {},
     "generate.checkpoint_epoch=3"),
    ("phase-not-run", ["generator", *T, "--set", "generator.kind=oracle"], {}, "generator.kind=oracle"),
    # command-line options
    ("seeds-zero", ["run", *T, "--seeds", "0"], {}, "--seeds"),
    ("seed-list-words", ["run", *T, "--seed-list", "a,b"], {}, "'a,b'"),
    ("seed-list-repeats", ["run", *T, "--seed-list", "1,1"], {}, "'1,1'"),
    ("seed-list-negative", ["run", *T, "--seed-list=-1,2"], {}, "-1"),
    ("seeds-and-list", ["run", *T, "--seeds", "2", "--seed-list", "0,1"], {}, "--seed-list"),
    ("share-gan-alone", ["run", *T, "--share-generator"], {}, "--share-generator"),
    ("unknown-option", ["run", *T, "--seedz", "3"], {}, "--seedz"),
    ("unknown-command", ["runn"], {}, "'runn'"),
    ("port", ["ui", "--port", "70000"], {}, "70000"),
    ("trials-zero", ["sweep", *T, "--trials", "0"], {}, "--trials"),
    # data
    ("data-dir-missing", ["run", *T[:2], "--data-dir", "{tmp}/nowhere", *T[4:]], {}, "nowhere"),
    ("data-dir-empty", ["run", *T[:2], "--data-dir", "{empty}", *T[4:]], {}, "{empty}"),
    ("data-dir-file", ["run", *T[:2], "--data-dir", "{file}", *T[4:]], {}, "{file}"),
    ("unknown-class", ["run", *T[:4], "--set", "data.classes=airplane,zebra"], {}, "'zebra'"),
    ("too-few-images", ["run", *T, "--set", "data.n_per_class=500"], {}, "500"),
    ("oracle-over-ask", ["run", *T, "--set", "generator.kind=oracle", "--set", "generate.n_samples=100000"], {},
     "100000"),
    ("cache-dir-is-a-file", ["run", *T], {"HARNESS_CACHE_DIR": "{file}"}, "{file}"),
    # named upstream runs, checked before any run opens
    ("generator-run-missing", ["generate", *T, "--generator-run", MISSING], {}, MISSING),
    ("generator-run-wrong-phase", ["generate", *T, "--generator-run", "{baseline}"], {}, "{baseline}"),
    ("gan-run-alias-wrong-phase", ["generate", *T, "--gan-run", "{baseline}"], {}, "{baseline}"),
    ("baseline-run-failed", ["pseudolabel", *T, "--baseline-run", "{failed}"], {}, "{failed}"),
    ("generate-run-wrong-phase", ["pseudolabel", *T, "--generate-run", "{generator}"], {}, "{generator}"),
    ("pseudolabel-run-missing", ["synthetic", *T, "--pseudolabel-run", MISSING], {}, MISSING),
    ("no-upstream-run", ["generate", *T, "--set", "gan.epochs=3"], {}, "generator"),
    ("generator-run-other-size", ["generate", *T, "--generator-run", "{generator64}"], {}, "data.image_size=64"),
    ("checkpoint-not-saved", ["generate", *T, "--generator-run", "{generator}", "--set", "generate.checkpoint_epoch=7"],
     {}, "checkpoint_epoch=7"),
    # compare
    ("compare-nothing", ["compare"], {}, "--parent"),
    ("compare-two-ways", ["compare", "--parent", "{baseline}", "--filter", "params.preset = 'tiny'"], {}, "--parent"),
    ("compare-half-pair", ["compare", "--baseline", "{baseline}"], {}, "--synthetic"),
    ("compare-bad-filter", ["compare", "--filter", "params.preset ="], {}, "params.preset ="),
    ("compare-missing-parent", ["compare", "--parent", MISSING], {}, MISSING),
    ("compare-parent-not-a-study", ["compare", "--parent", "{baseline}"], {}, "{baseline}"),
    ("compare-wrong-arm", ["compare", "--baseline", "{baseline}", "--synthetic", "{generator}"], {}, "{generator}"),
    ("compare-arms-swapped", ["compare", "--baseline", "{synthetic}", "--synthetic", "{baseline}"], {}, "arms swapped"),
    ("compare-one-run-twice", ["compare", "--baseline", "{baseline}", "--synthetic", "{baseline}"], {}, "same run"),
    # sweep specs: every section and option checked, both ends of every range
    ("spec-missing", ["sweep", *T, "--spec", "{tmp}/none.toml"], {}, "none.toml"),
    ("spec-not-toml", ["sweep", *T, "--spec", "{spec:toml}"], {}, "toml.toml"),
    ("spec-section", ["sweep", *T, "--spec", "{spec:section}"], {}, "scheduler"),
    ("spec-field", ["sweep", *T, "--spec", "{spec:field}"], {}, "generate.nsamples"),
    ("spec-fixed-field", ["sweep", *T, "--spec", "{spec:fixed}"], {}, "gan.lr"),
    ("spec-type", ["sweep", *T, "--spec", "{spec:type}"], {}, "'integer'"),
    ("spec-low-high", ["sweep", *T, "--spec", "{spec:order}"], {}, "low (20)"),
    ("spec-log-zero", ["sweep", *T, "--spec", "{spec:log}"], {}, "low > 0"),
    ("spec-range-end", ["sweep", *T, "--spec", "{spec:end}"], {}, "pseudolabel.threshold"),
    ("spec-option", ["sweep", *T, "--spec", "{spec:option}"], {}, "step"),
    ("spec-sampler-option", ["sweep", *T, "--spec", "{spec:sampler_key}"], {}, "seed"),
    ("spec-sampler-type", ["sweep", *T, "--spec", "{spec:sampler}"], {}, "'cmaes'"),
    ("spec-pruner-type", ["sweep", *T, "--spec", "{spec:pruner}"], {}, "'hyperband'"),
    ("spec-pruner-warmup", ["sweep", *T, "--spec", "{spec:warmup}"], {}, "'five'"),
    ("spec-pruner-lower", ["sweep", *T, "--spec", "{spec:lower}"], {}, "'high'"),
    ("spec-startup", ["sweep", *T, "--spec", "{spec:startup}"], {}, "-1"),
    ("spec-no-space", ["sweep", *T, "--spec", "{spec:empty}"], {}, "no [space"),
    ("spec-empty-choices", ["sweep", *T, "--spec", "{spec:choices}"], {}, "choices"),
    ("spec-bad-choice", ["sweep", *T, "--spec", "{spec:choice}"], {}, "'weird'"),
    ("spec-range-not-numbers", ["sweep", *T, "--spec", "{spec:numbers}"], {}, "low and high"),
    ("spec-param-not-table", ["sweep", *T, "--spec", "{spec:table}"], {}, "generate.n_samples"),
    ("sweep-without-validation", ["sweep", *T, "--spec", "{spec:ok}", "--set", "data.val_per_class=0"], {},
     "data.val_per_class"),
    ("sweep-checkpoint-of-oracle", ["sweep", *T, "--set", "generator.kind=oracle"], {}, "generator.kind=oracle"),
    ("sweep-range-beyond-preset", ["sweep", *T, "--spec", "{spec:real_only}"], {}, "classifier.real_only_epochs"),
    ("sweep-range-beyond-pool", ["sweep", *T, "--set", "generator.kind=oracle", "--set", "generate.n_samples=20",
                                 "--spec", "{spec:samples}"], {}, "1000"),
    # grids: every cell checked before anything is enqueued; a report reads, never creates
    ("grid-bad-axis-value", ["grid", *T, "--axis", "generator.kind=gan,vae", "--storage", "sqlite:///{tmp}/o.db"], {},
     "'vae'"),
    ("grid-too-many-images", ["grid", *T, "--axis", "data.n_per_class=20,100000", "--storage", "sqlite:///{tmp}/o.db"],
     {}, "100000"),
    ("grid-cell-over-ask", ["grid", *T, "--axis", "generator.kind=gan,oracle", "--set", "generate.n_samples=500",
                            "--storage", "sqlite:///{tmp}/o.db"], {}, "500"),
    # grid options: checked where they enter, before a study is made
    ("grid-halfwidth-nan", ["grid", *T, *G, "--seeds", "2", "--ci-halfwidth", "nan"], {}, "--ci-halfwidth"),
    ("grid-halfwidth-inf", ["grid", *T, *G, "--seeds", "2", "--ci-halfwidth", "inf"], {}, "--ci-halfwidth"),
    ("grid-halfwidth-one-seed", ["grid", *T, *G, "--seeds", "1", "--ci-halfwidth", "1"], {}, "--seeds 2"),
    ("grid-max-below-seeds", ["grid", *T, *G, "--seeds", "5", "--ci-halfwidth", "1", "--max-seeds", "2"], {},
     "--max-seeds 2 is below --seeds 5"),
    ("grid-more-generators-than-seeds", ["grid", *T, "--axis", "data.n_per_class=10,20", "--storage",
                                        "sqlite:///{tmp}/o.db", "--seeds", "2", "--set", "seeds.generators=5"], {},
     "seeds.generators=5"),
    ("worker-not-a-grid", ["worker", "--study", "plain", "--storage", "{notgrid}"], {}, "'plain'"),
    ("worker-empty-study", ["worker", "--study", "empty", "--storage", "{notgrid}"], {},
     "study 'empty' in sqlite:///"),
    ("grid-axis-twice", ["grid", *T, "--axis", "data.n_per_class=10,20", "--axis", "data.n_per_class=30"], {},
     "data.n_per_class"),
    ("grid-report-missing", ["grid", *T, "--report", "--study", "nosuch", "--storage", "sqlite:///{tmp}/o.db"], {},
     "nosuch"),
    ("quality-too-few", ["config", "--set", "quality.n_samples=2"], {}, "quality.n_samples (2)"),
    ("gan-batch-beyond-data", ["run", *T, "--set", "gan.batch_size=100"], {}, "gan.batch_size (100)"),
    ("gan-batch-beyond-data-phase", ["generator", *T, "--set", "gan.batch_size=100"], {}, "gan.batch_size (100)"),
    ("evaluator-beyond-data", ["run", *T, "--set", "quality.enabled=true", "--set", "quality.evaluator_per_class=500"],
     {}, "quality.evaluator_per_class=500"),
    # the tracking store
    ("store-unreachable", ["baseline", *T], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "127.0.0.1:9"),
    ("store-folder-missing", ["baseline", *T], {"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/no/such/dir/m.db"},
     "no/such/dir"),
    ("store-read-only", ["baseline", *T], {"MLFLOW_TRACKING_URI": "sqlite:///file:{tmp}/ro.db?mode=ro&uri=true"},
     "read-only"),
    ("store-scheme", ["baseline", *T], {"MLFLOW_TRACKING_URI": "bogus://somewhere"}, "bogus://somewhere"),
    ("experiment-deleted", ["baseline", *T, "--experiment", "gone"], {}, "'gone'"),
    ("ui-on-a-server", ["ui"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "127.0.0.1:9"),
    ("classifier-kind-unknown", ["run", *T, "--set", "classifier.kind=vgg"], {}, "classifier.kind"),
    ("classifier-cannot-take-the-size", ["run", *T, "--set", "classifier.kind=torchvision:vit_b_16"], {}, "32 px"),
    ("experiment-newline", ["baseline", *T, "--experiment", "two\nlines"], {}, "'two\\nlines'"),
    ("preset-unknown-section", ["config", "--preset", "{tmp}/baseline-table.toml"], {}, "[baseline]"),
    ("class-folder-with-a-space", ["run", "--preset", "tiny", "--data-dir", "{spaced}", "--set",
                                   "data.classes=airplane,automobile,bird"], {}, "'bird '"),
    ("experiment-empty", ["baseline", *T, "--experiment", ""], {}, "--experiment"),
    ("store-is-a-folder", ["baseline", *T], {"MLFLOW_TRACKING_URI": "sqlite:///{empty}"}, "is a folder"),
    # files that are not what they claim
    ("preset-binary", ["config", "--preset", "{tmp}/binary.toml"], {}, "binary.toml"),
    ("preset-is-a-folder", ["config", "--preset", "{empty}"], {}, "is a folder"),
    ("image-link-loop", ["run", *T[:2], "--data-dir", "{looped}", *T[4:]], {}, "loop.png"),
    ("class-not-in-data", ["run", *T[:4], "--set", "data.classes=ship,truck"], {}, "data.classes=all"),
    # generators from outside: a folder of any tool's images, a pretrained text-to-image pipeline
    ("folder-unset", ["generate", *T, "--set", "generator.kind=folder"], {}, "generator.folder"),
    ("folder-missing", ["generate", *T, *F, "--set", "generator.folder={tmp}/nowhere"], {}, "nowhere"),
    ("folder-is-a-file", ["generate", *T, *F, "--set", "generator.folder={file}"], {}, "{file}"),
    ("folder-empty", ["generate", *T, *F, "--set", "generator.folder={empty}"], {}, "{empty}"),
    ("folder-mixed", ["generate", *T, *F, "--set", "generator.folder={gen_mixed}"], {}, "stray.png"),
    ("folder-unknown-class", ["run", *T, *F, "--set", "generator.folder={gen_zebra}"], {}, "zebra"),
    ("folder-too-few", ["run", *T, *F, "--set", "generator.folder={gen_classes}", "--set", "generate.n_samples=500"],
     {}, "500"),
    ("folder-flat-filter", ["run", *T, *F, "--set", "generator.folder={gen_flat}", "--set", "pseudolabel.mode=filter"],
     {}, "pseudolabel.mode=filter"),
    ("folder-unreadable", ["generate", *T, *F, "--set", "generator.folder={gen_broken}"], {}, "broken.png"),
    ("t2i-no-model", ["generate", *T, "--set", "generator.kind=text2image"], {}, "text2image.model"),
    ("t2i-no-network", ["generate", *T, "--set", "generator.kind=text2image", "--set", "text2image.model=someorg/nomodel"],
     {"HF_HOME": "{tmp}/hf", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}, "someorg/nomodel"),
    ("t2i-offline", ["generate", *T, "--set", "generator.kind=text2image", "--set", "text2image.model=someorg/nomodel"],
     {"HF_HUB_OFFLINE": "1", "HF_HOME": "{tmp}/hf"}, "someorg/nomodel"),
    ("t2i-not-a-pipeline", ["generate", *T, "--set", "generator.kind=text2image", "--set", "text2image.model={empty}"],
     {}, "model_index.json"),
    ("t2i-fp16-on-cpu", ["run", *T, "--set", "generator.kind=text2image", "--set", "text2image.model={t2i}",
                         "--set", "text2image.dtype=fp16"], {}, "text2image.dtype=fp16"),
    ("t2i-prompt-unknown-class", ["generate", *T, "--set", "generator.kind=text2image", "--set",
                                  "text2image.model={t2i}", "--set", "text2image.prompts=zebra=a zebra"], {}, "zebra"),
    ("t2i-prompt-without-class", ["generate", *T, "--set", "generator.kind=text2image", "--set",
                                  "text2image.model={t2i}", "--set", "text2image.prompt=a photo"], {}, "'a photo'"),
    ("t2i-strength", ["config", "--set", "text2image.strength=0"], {}, "text2image.strength"),
    ("t2i-dtype", ["config", "--set", "text2image.dtype=int8"], {}, "'int8'"),
    ("t2i-resolution", ["config", "--set", "text2image.resolution=30"], {}, "text2image.resolution"),
    ("t2i-img2img-no-step", ["config", "--set", "text2image.mode=img2img", "--set", "text2image.steps=1"], {},
     "raise text2image.steps to at least 2"),
    # A phase that does not run names what would make it run, not unrelated settings.
    ("pretrain-not-asked", ["pretrain", *T, "--set", "pretrain.classes=cat"], {}, "classifier.init=pretrain"),
    ("pretrain-dir-empty", ["run", *T, "--set", "classifier.init=pretrain", "--set", "pretrain.data_dir={empty}"], {},
     "pretrain.data_dir {empty}: "),
    ("weights-nan", ["baseline", *T, "--set", "classifier.init={tmp}/nan.pt"], {}, "non-finite values"),
    ("probe-from-scratch", ["baseline", *T, "--set", "classifier.mode=probe"], {}, "classifier.init=pretrain"),
    ("gan-init-missing", ["run", *T, "--set", "gan.init={tmp}/none.pt"], {}, "no such checkpoint file"),
    ("gan-freeze-d-scratch", ["config", "--set", "gan.freeze_d=1"], {}, "freezes critic layers that were never trained"),
    ("confirm-unknown-screen", ["grid", "--confirm", "nothing", "--study", "c", "--storage", "sqlite:///{tmp}/o.db"], {},
     "no grid 'nothing'"),
    ("control-disabled", ["control", *T, "--set", "control.enabled=false"], {}, "control.enabled=true"),
    ("control-without-pair", ["compare", "--parent", "{baseline}", "--control", "{baseline}"], {}, "--control"),
    ("grid-dry-run-and-plan", ["grid", *T, *G, "--dry-run", "--plan-only"], {}, "--plan-only"),
    ("grid-dry-run-and-report", ["grid", *T, *G, "--dry-run", "--report"], {}, "--report"),
    ("grid-margin-too-wide", ["grid", *T, *G, "--margin", "1e9"], {}, "--margin"),
    ("grid-rung-too-many", ["grid", *T, "--axis", "generator.kind=gan", "--storage", "sqlite:///{tmp}/o.db",
                            "--oracle-ladder", "0,100000", "--dry-run"], {}, "--oracle-ladder rung 100000"),
    ("control-is-baseline", ["compare", "--baseline", "{baseline}", "--synthetic", "{synthetic}", "--control",
                             "{baseline}"], {}, "--control"),
]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, template_db, tree_template):
    """A store holding finished baseline and generator runs (32 and 64 px), a FAILED baseline and a
    deleted experiment: what the upstream-run cases name."""
    root = tmp_path_factory.mktemp("prepared")
    db = root / "mlflow.db"
    shutil.copy(template_db, db)
    uri = f"sqlite:///{db}"
    from click.testing import CliRunner
    runner = CliRunner()
    base = ["--preset", "tiny", "--data-dir", str(tree_template), "--set", "data.classes=airplane,automobile,bird"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("HARNESS_CACHE_DIR", str(root / "cache"))
        mp.chdir(root)
        invoke(runner, ["baseline", *base])
        invoke(runner, ["generator", *base])
        invoke(runner, ["generator", *base, "--set", "data.image_size=64"])
        assert invoke(runner, ["baseline", *base, "--set", "classifier.lr=1e12"], ok=False).exit_code == 2
        invoke(runner, ["run", *base])  # reuses the two above; adds a synthetic arm
        client = MlflowClient(uri)
        client.delete_experiment(client.create_experiment("gone"))
        exp = client.get_experiment_by_name("harness").experiment_id
        runs = client.search_runs([exp], order_by=["attributes.start_time ASC"])
    by_phase = {}
    for r in runs:
        by_phase.setdefault(r.data.tags["harness.phase"], []).append(r.info.run_id)
    baseline, failed = by_phase["baseline"][0], by_phase["baseline"][1]
    generator, generator64 = by_phase["generator"][:2]
    synthetic = by_phase["synthetic"][0]
    assert client.get_run(failed).info.status == "FAILED"
    import optuna
    notgrid = f"sqlite:///{root / 'optuna.db'}"
    plain = optuna.create_study(study_name="plain", storage=notgrid, sampler=optuna.samplers.RandomSampler(seed=0))
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    optuna.create_study(study_name="empty", storage=notgrid, sampler=optuna.samplers.RandomSampler(seed=0))
    import tiny_diffusers
    return {"db": db, "notgrid": notgrid, "tree": str(tree_template), "baseline": baseline, "generator": generator,
            "generator64": generator64, "failed": failed, "synthetic": synthetic, **_generated(root / "generated", tree_template),
            "t2i": str(tiny_diffusers.build(root / "t2i"))}


def _generated(root, tree):
    """Folders of 'generated' images (copies of the tree's), each broken in one way."""
    out = {}
    for name, classes in (("classes", ("airplane", "automobile", "bird")), ("zebra", ("airplane", "zebra")),
                          ("mixed", ("airplane",)), ("broken", ("airplane", "bird"))):
        for c in classes:
            shutil.copytree(tree / "train" / ("bird" if c == "zebra" else c), root / name / c)
        out[f"gen_{name}"] = str(root / name)
    shutil.copy(next((tree / "train" / "bird").iterdir()), root / "mixed" / "stray.png")
    (root / "broken" / "bird" / "broken.png").write_bytes(b"not a png at all")
    shutil.copytree(tree / "train" / "cat", root / "flat")
    out["gen_flat"] = str(root / "flat")
    return out


def _unfinished(client) -> set[str]:
    exps = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return {r.info.run_id for r in client.search_runs(exps, "attributes.status != 'FINISHED'", run_view_type=ViewType.ALL)}


@pytest.mark.parametrize("args,env,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_no_run(prepared, tmp_path, monkeypatch, runner, args, env, names):
    db = tmp_path / "mlflow.db"
    shutil.copy(prepared["db"], db)
    shutil.copy(prepared["db"], tmp_path / "ro.db")
    (tmp_path / "bad.toml").write_text("[data\n")
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    looped = shutil.copytree(prepared["tree"], tmp_path / "looped")
    (looped / "train" / "bird" / "loop.png").symlink_to(looped / "train" / "bird" / "loop.png")
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "baseline-table.toml").write_text("[baseline]\n")
    spaced = shutil.copytree(prepared["tree"], tmp_path / "spaced")
    for split in ("train", "test"):
        (spaced / split / "bird").rename(spaced / split / "bird ")
    (tmp_path / "empty").mkdir()
    for name, body in {**SPECS, "ok": SPEC}.items():
        (tmp_path / f"{name}.toml").write_text(body)
    import torch
    torch.save({"conv.weight": torch.full((4, 3, 3, 3), float("nan")), "conv.bias": torch.zeros(4)}, tmp_path / "nan.pt")
    values = {**prepared, "tmp": str(tmp_path), "file": str(tmp_path / "a-file"), "empty": str(tmp_path / "empty"),
              "looped": str(looped), "spaced": str(spaced)}

    def fill(text: str) -> str:
        if text.startswith("{spec:"):
            return str(tmp_path / f"{text[6:-1]}.toml")
        return text.format(**values) if "{" in text else text

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    for k, v in env.items():
        monkeypatch.setenv(k, fill(v))
    client = MlflowClient(f"sqlite:///{db}")
    before = _unfinished(client)

    result = invoke(runner, [fill(a) for a in args], ok=False)

    # An old option's name still works this release, saying so first: not the error line.
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("Deprecated: ")]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fill(names) in lines[0], lines[0]
    assert _unfinished(client) == before  # nothing left FAILED or RUNNING by a bad input
    if args[0] == "grid" and (tmp_path / "o.db").exists():  # nor an Optuna study whose name would wait for a plan
        import optuna
        assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'o.db'}") == []


def test_a_preset_is_never_refused_for_its_own_seeds_setting(runner, tree):
    # strong-baseline sets seeds.share_generator = true: moot for one pipeline, never an error the user
    # did not type (only the --share-generator flag without seeds is refused).
    out = invoke(runner, ["run", "--preset", "strong-baseline", "--data-dir", tree, "--set",
                          "data.classes=airplane,automobile,bird", "--set", "data.n_per_class=30", "--set",
                          "data.val_per_class=5", "--dry-run"]).output
    assert "dry run: 1 pipeline(s) of baseline, generator, generate, pseudolabel, control, synthetic, compare" in out
    result = invoke(runner, ["run", "--preset", "tiny", "--data-dir", tree, "--share-generator", "--dry-run"], ok=False)
    assert result.exit_code == 2 and "--share-generator needs --seeds" in result.output


def test_settings_nothing_reads_are_said_once(runner, tree):
    # Accepted, but nothing reads them: one note line each, naming what the user typed.
    t = ["run", "--preset", "tiny", "--data-dir", tree, "--set", "data.classes=airplane,automobile,bird", "--dry-run"]
    out = invoke(runner, [*t, "--set", "pretrain.classes=cat", "--set", "pretrain.epochs=3"]).stderr
    assert "note: pretrain.classes, pretrain.epochs ignored: the pretrain phase runs with classifier.init=pretrain" in out
    out = invoke(runner, [*t, "--set", "generator.kind=replay", "--set", "generate.n_samples=600"]).stderr
    assert "note: generator.kind=replay: generate.n_samples=600 replays the 60 training images 10.0 times" in out
    assert "note:" not in invoke(runner, t).stderr  # the tiny preset's own [pretrain] is no note
    # An old option's name is said however falsy its value (0 == False once hid it).
    result = invoke(runner, ["grid", "--preset", "tiny", "--data-dir", tree, "--precision", "0", "--dry-run"], ok=False)
    assert result.exit_code == 2 and "--precision is now --ci-halfwidth" in result.stderr.splitlines()[0]


def test_the_table_covers_every_category():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert {"config", "run", "generator", "generate", "pseudolabel", "synthetic", "compare", "sweep", "ui"} <= commands
