"""lm-eval integration: local task YAMLs equal the stock tasks; end to end on TinyStories; bad input."""

from __future__ import annotations

import importlib
import json
import os

import datasets
import pytest

import main
from configs import RunConfig
from evaluation.zeroshot import markdown_table, prepare_tasks, summarize

STOCK = ("piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "boolq", "lambada_openai", "openbookqa")
STOCK_YAML = {
    "piqa": "piqa/piqa.yaml", "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
    "boolq": "super_glue/boolq/default.yaml", "lambada_openai": "lambada/lambada_openai.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml", "wikitext": "wikitext/wikitext.yaml",
}


def _arc(id_, question, texts, answer, labels="ABCD"):
    return {"id": id_, "question": question, "answerKey": answer,
            "choices": {"text": texts, "label": list(labels[:len(texts)])}}


def _obqa(id_, stem, texts, answer):
    return {"id": id_, "question_stem": stem, "answerKey": answer, "choices": {"text": texts, "label": list("ABCD")}}


# Documents as the hub datasets hold them, written out by hand from the same items of the local
# files: {task: [(index in the local file, hub document), ...]}. lambada_openai's are its text.
HUB_DOCS = {
    "piqa": [
        (0, {"goal": "How do I ready a guinea pig cage for it's new occupants?",
             "sol1": "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, "
                     "you will also need to supply it with a water bottle and a food dish.",
             "sol2": "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans "
                     "material, you will also need to supply it with a water bottle and a food dish.",
             "label": 0}),
        (1, {"goal": "dresser", "sol1": "replace drawer with bobby pin ", "sol2": "finish, woodgrain with  bobby pin ",
             "label": 1}),
    ],
    "arc_easy": [
        (0, _arc("Mercury_417466", "Which statement best explains why photosynthesis is the foundation of most food "
                 "webs?", ["Sunlight is the source of energy for nearly all ecosystems.",
                           "Most ecosystems are found on land instead of in water.",
                           "Carbon dioxide is more available than other gases.",
                           "The producers in all ecosystems are plants."], "A")),
        (1, _arc("Mercury_7081673", "Which piece of safety equipment is used to keep mold spores from entering the "
                 "respiratory system?", ["safety goggles", "breathing mask", "rubber gloves", "lead apron"], "B")),
    ],
    "arc_challenge": [
        (0, _arc("Mercury_7175875", "An astronomer observes that a planet rotates faster after a meteorite impact. "
                 "Which is the most likely effect of this increase in rotation?",
                 ["Planetary density will decrease.", "Planetary years will become longer.",
                  "Planetary days will become shorter.", "Planetary gravity will become stronger."], "C")),
    ],
    "hellaswag": [
        (0, {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
             "label": "3", "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                                       "is holding a rubik's cube.", "starts pulling up roofing on a roof."]}),
        (1, {"activity_label": "Clean and jerk",
             "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.",
             "ctx_b": "the lady", "label": "3",
             "endings": ["swings and lands in her arms.", "pulls the barbell forward.",
                         "pulls a rope attached to the barbell.", "stands and lifts the weight over her head."]}),
    ],
    "winogrande": [
        (0, {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
             "option1": "Sarah", "option2": "Maria", "answer": "2"}),
        (2, {"sentence": "They were worried the wine would ruin the bed and the blanket, but the _ was't ruined.",
             "option1": "blanket", "option2": "bed", "answer": "2"}),
    ],
    "boolq": [
        (8, {"question": "can u drive in canada with us license", "idx": 8, "label": 1,
             "passage": "American entry into Canada by land -- Persons driving into Canada must have their vehicle's "
                        "registration document and proof of insurance."}),
        (39, {"question": "is there a sequel to the movie the golden compass", "idx": 39, "label": 0,
              "passage": "The Golden Compass (film) -- In 2011, Philip Pullman remarked at the British Humanist "
                         "Association annual conference that due to the first film's disappointing sales in the "
                         "United States, there would not be any sequels made."}),
    ],
    "lambada_openai": [(0, None), (1, None)],
    "openbookqa": [
        (0, _obqa("8-343", "A person wants to start saving money so that they can afford a nice vacation at the end "
                  "of the year. After looking over their budget and expenses, they decide the best way to save money "
                  "is to", ["make more phone calls", "quit eating lunch out", "buy less with monopoly money",
                            "have lunch with friends"], "B")),
        (1, _obqa("1129", "There is most likely going to be fog around:",
                  ["a marsh", "a tundra", "the plains", "a desert"], "A")),
    ],
}


@pytest.fixture(scope="module")
def tasks_dir(data_dir) -> str:
    return os.path.join(data_dir, "tasks")


@pytest.fixture(scope="module")
def local_tasks(tasks_dir):
    prepared = prepare_tasks(STOCK, tasks_dir)
    assert prepared.names == {name: f"{name}_local" for name in STOCK}
    return {name: prepared.tasks[lm_name] for name, lm_name in prepared.names.items()}


def _stock_task(name: str, docs: list[dict]):
    """lm-eval's stock task, its YAML and functions as installed, over hand-built hub documents."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(os.path.join(os.path.dirname(lm_eval.tasks.__file__), STOCK_YAML[name]), resolve_func=True)
    splits = {cfg[k] for k in ("training_split", "validation_split", "test_split") if cfg.get(k)}
    cfg["custom_dataset"] = lambda **_: datasets.DatasetDict({s: datasets.Dataset.from_list(docs) for s in splits})
    return TaskManager(include_defaults=False).load([cfg])["tasks"][name]


def _scored(task, doc) -> list[tuple[str, str]]:
    """The (context, continuation) pairs lm-eval scores for ``doc``, zero-shot."""
    requests = task.construct_requests(doc, task.fewshot_context(doc, 0), metadata=(task.task_name, 0, 1))
    return [r.arguments for r in (requests if isinstance(requests, list) else [requests])]


def _view(task, doc) -> tuple:
    choices = task.doc_to_choice(doc) if task.config.doc_to_choice is not None else None
    return task.doc_to_text(doc), choices, task.doc_to_target(doc), _scored(task, doc)


@pytest.mark.parametrize("name", STOCK)
def test_local_task_equals_stock_task(name, local_tasks, tasks_dir):
    local = local_tasks[name]
    cases = HUB_DOCS[name]
    if name == "lambada_openai":
        with open(os.path.join(tasks_dir, "lambada_openai", "lambada_test.jsonl")) as f:
            texts = [json.loads(line)["text"] for line in f][:len(cases)]
        cases = [(i, {"text": text}) for (i, _), text in zip(cases, texts)]
    stock = _stock_task(name, [doc for _, doc in cases])
    for j, (i, _) in enumerate(cases):
        assert _view(local, local.eval_docs[i]) == _view(stock, stock.eval_docs[j]), (name, i)
    assert [m["metric"] for m in local.config.metric_list] == [m["metric"] for m in stock.config.metric_list]
    assert local.OUTPUT_TYPE == stock.OUTPUT_TYPE


@pytest.mark.parametrize("name, index, text, choices, target", [
    ("piqa", 1, "Question: dresser\nAnswer:", ["replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "],
     1),
    ("arc_challenge", 0, "Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
     "Which is the most likely effect of this increase in rotation?\nAnswer:",
     ["Planetary density will decrease.", "Planetary years will become longer.", "Planetary days will become shorter.",
      "Planetary gravity will become stronger."], 2),
    ("hellaswag", 1, "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady",
     ["swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope attached to the barbell.",
      "stands and lifts the weight over her head."], 3),
    # WikiHow: the stock preprocessing drops bracketed text and collapses the double space it leaves.
    ("hellaswag", 3505, "Family Life: How to entertain a toddler. Ask the toddler what he or she would like to do "
     "instead of doing what you would like to do.. Visit a site like to find loads of creative activities for "
     "toddlers and preschoolers.. Choose small, simple games like candy land or chutes and ladders.", None, 1),
    ("winogrande", 0, 1, ["Sarah was a much better surgeon than Maria so Sarah",
                          "Sarah was a much better surgeon than Maria so Maria"], "always got the easier cases."),
    ("boolq", 8, "American entry into Canada by land -- Persons driving into Canada must have their vehicle's "
     "registration document and proof of insurance.\nQuestion: can u drive in canada with us license?\nAnswer:",
     ["no", "yes"], 1),
    ("lambada_openai", 0, None, None, " signs"),
    ("openbookqa", 1, "There is most likely going to be fog around:", ["a marsh", "a tundra", "the plains", "a desert"],
     0),
])
def test_hand_checked_documents(name, index, text, choices, target, local_tasks):
    task = local_tasks[name]
    doc = task.eval_docs[index]
    if text is not None:
        assert task.doc_to_text(doc) == text
    if choices is not None:
        assert task.doc_to_choice(doc) == choices
    assert task.doc_to_target(doc) == target


def test_local_task_sizes(local_tasks):
    sizes = {name: len(task.eval_docs) for name, task in local_tasks.items()}
    assert sizes == {"piqa": 1838, "arc_easy": 2376, "arc_challenge": 1172, "hellaswag": 10042, "winogrande": 1267,
                     "boolq": 3270, "lambada_openai": 5153, "openbookqa": 500}


def test_lambada_few_shot_uses_the_stock_split(tasks_dir):
    # The stock lambada_openai draws its examples from its only (test) split, which the local file has.
    prepared = prepare_tasks(("lambada_openai",), tasks_dir, num_fewshot=2)
    assert list(prepared.tasks) == ["lambada_openai_local"]


def test_summary_average_and_table():
    out = {"results": {"piqa_local": {"acc,none": 0.6, "acc_stderr,none": 0.01, "acc_norm,none": 0.7,
                                      "acc_norm_stderr,none": 0.02},
                       "winogrande_local": {"acc,none": 0.5, "acc_stderr,none": "N/A"}},
           "n-samples": {"piqa_local": {"effective": 10}, "winogrande_local": {"effective": 10}}}
    summary = summarize(out, {"piqa": "piqa_local", "winogrande": "winogrande_local"})
    assert summary["average"] == {"value": pytest.approx(0.6), "metric": {"piqa": "acc_norm", "winogrande": "acc"}}
    assert summary["tasks"]["winogrande"]["acc_stderr"] is None
    table = markdown_table(summary)
    assert "| piqa | 10 | 60.00 ± 1.00 | 70.00 ± 2.00 | acc_norm |" in table
    assert "| winogrande | 10 | 50.00 |  | acc |" in table and "| average | |  |  | 60.00 |" in table


def test_end_to_end_on_tinystories(tinystories_dir, data_dir, tmp_path, cli):
    out = cli("main.py", "--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "none",
              "--seqlen", "512", "--qbits", "8", "8", "16", "--tasks", "piqa,arc_easy", "--lm_eval_limit", "4",
              "--output_dir", str(tmp_path), "--run_name", "zs")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "zs.json").read_text())
    lm_eval = result["metrics"]["lm_eval"]
    assert set(lm_eval["tasks"]) == {"piqa", "arc_easy"} and lm_eval["local"] and lm_eval["limit"] == 4
    for row in lm_eval["tasks"].values():
        assert row["samples"] == 4 and 0 <= row["acc"] <= 1 and 0 <= row["acc_norm"] <= 1
    assert lm_eval["average"]["metric"] == {"piqa": "acc_norm", "arc_easy": "acc_norm"}
    assert result["timings"]["lm_eval_s"] > 0 and result["config"]["tasks"] == ["piqa", "arc_easy"]
    assert "| piqa | 4 |" in out.stdout and "zero-shot avg (%)" in out.stdout


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("the model was loaded")

    run_module = importlib.import_module("pipeline.run")  # the package exports the function under the same name
    monkeypatch.setattr(run_module, "load_model", refuse)
    monkeypatch.setattr(run_module, "load_tokenizer", refuse)


def _bad_task_files(root) -> str:
    (root / "piqa").mkdir(parents=True)
    (root / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    return str(root)


@pytest.mark.parametrize("args, message", [
    (["--tasks", "piqa,mmlu"], "unknown local task 'mmlu'"),
    (["--tasks", "arc_esay"], "did you mean arc_easy"),
    (["--tasks", "piqa", "--tasks_data_dir", "BAD"], "task file for piqa not found"),
    (["--tasks", "arc_easy", "--num_fewshot", "5"], "arc_easy draws its examples from the 'train' split"),
    (["--tasks", "piqa", "--tasks_data_dir", "/nowhere"], "--tasks_data_dir /nowhere is not a folder"),
    (["--tasks", "piqa", "--lm_eval_batch_size", "big"], "--lm_eval_batch_size must be a positive integer"),
    (["--tasks", "piqa", "--lm_eval_limit", "0"], "--lm_eval_limit must be a document count"),
    (["--num_fewshot", "2"], "add --tasks"),
])
def test_bad_task_input_fails_before_the_model_loads(args, message, tinystories_dir, data_dir, tmp_path, capsys,
                                                     no_model_load):
    args = [str(_bad_task_files(tmp_path / "tasks")) if a == "BAD" else a for a in args]
    code = main.main(["--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "none", "--seqlen", "512",
                      "--output_dir", str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.glob("*.json")) == []


def test_local_name_without_data_dir_says_pass_it():
    with pytest.raises(ValueError, match="piqa_local read local files: pass --tasks_data_dir"):
        prepare_tasks(("piqa_local",), None)


def test_tasks_data_dir_defaults_to_data_dir_tasks(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("PTQ_TASKS_DIR", raising=False)
    cfg = main.build_config(main.build_parser().parse_args(["--model", "m", "--data_dir", data_dir, "--tasks", "piqa"]))
    assert cfg.tasks == ("piqa",) and cfg.tasks_data_dir == os.path.join(data_dir, "tasks")
    cfg = main.build_config(main.build_parser().parse_args(["--model", "m", "--data_dir", str(tmp_path)]))
    assert cfg.tasks == () and cfg.tasks_data_dir is None


def test_run_config_lm_eval_options():
    cfg = RunConfig(model="m", tasks=["piqa"], lm_eval_batch_size="auto:4", lm_eval_limit=0.1, num_fewshot=0)
    assert cfg.tasks == ("piqa",) and cfg.to_dict()["tasks"] == ["piqa"]
    with pytest.raises(ValueError, match="--num_fewshot must be 0 or more"):
        RunConfig(model="m", tasks=("piqa",), num_fewshot=-1)
    with pytest.raises(ValueError, match="fraction between 0 and 1"):
        RunConfig(model="m", tasks=("piqa",), lm_eval_limit=1.5)


# --- wikitext: lm-eval's document-level word perplexity -----------------------------------------

WIKITEXT_RAW = os.path.join("wikitext2", "wiki.test.raw")


def _wikitext_text(data_dir) -> str:
    with open(os.path.join(data_dir, WIKITEXT_RAW), encoding="utf-8") as f:
        return f.read()


def test_wikitext_documents_are_the_articles(data_dir):
    from evaluation.lm_eval_tasks.utils import wikitext_documents

    text = _wikitext_text(data_dir)
    docs = wikitext_documents(text)
    # 62 articles (the hub's EleutherAI/wikitext_document_level test split has 62 rows).
    assert len(docs) == 62
    assert docs[0].startswith(" = Robert Boulter = \n") and docs[1].startswith(" = Du Fu = \n")
    assert docs[-1].startswith(" = The Hustler ( film ) = \n")
    assert "\n".join([" ", *docs]) == text  # only the blank line before the first title is not in a document
    assert not any(d.startswith(" = = ") for d in docs)  # sections stay inside their article
    # Table legends start like a title but do not end like one.
    assert sum(" = National record \n" in d for d in docs) == 1
    assert wikitext_documents(" = A = \n x \n = = B = = \n y \n = C = \n z ") == [
        " = A = \n x \n = = B = = \n y ", " = C = \n z "]


def test_wikitext_local_task_equals_stock_task(tasks_dir):
    local = prepare_tasks(("wikitext",), tasks_dir).tasks["wikitext_local"]
    assert len(local.eval_docs) == 62
    hand_built = {"page": " = Ise @-@ class battleship = \n \n The ships ' 12 @,@ 000 ( long ) tons , \" built \" "
                          "in 1 @.@ 5 years ; they 's N = = Design = = \n"}
    stock = _stock_task("wikitext", [hand_built, local.eval_docs[0]])
    for doc in (hand_built, local.eval_docs[0]):
        assert local.doc_to_target(doc) == stock.doc_to_target(doc)
        assert _view(local, doc) == _view(stock, doc)
        assert local.process_results(doc, [-123.0]) == stock.process_results(doc, [-123.0])
    # The stock detokenizer, quirks included (the quote pairing eats the space after "ships").
    assert local.doc_to_target(hand_built) == (' = Ise-class battleship =\n\nThe ships\'12,000 (long) tons, "built" in '
                                               '1.5 years; they\'s 1 == Design ==\n')
    assert [m["metric"] for m in local.config.metric_list] == ["word_perplexity", "byte_perplexity", "bits_per_byte"]
    assert local.OUTPUT_TYPE == stock.OUTPUT_TYPE == "loglikelihood_rolling"


def test_wikitext_is_reported_apart_and_not_averaged():
    out = {"results": {"piqa_local": {"acc,none": 0.6, "acc_norm,none": 0.7},
                       "wikitext_local": {"word_perplexity,none": 41.2, "word_perplexity_stderr,none": "N/A",
                                          "byte_perplexity,none": 1.98, "bits_per_byte,none": 0.985}},
           "n-samples": {"piqa_local": {"effective": 10}, "wikitext_local": {"effective": 62}}}
    summary = summarize(out, {"piqa": "piqa_local", "wikitext": "wikitext_local"})
    assert summary["average"] == {"value": pytest.approx(0.7), "metric": {"piqa": "acc_norm"}}
    assert summary["tasks"]["wikitext"]["word_perplexity"] == 41.2
    table = markdown_table(summary)
    assert "| wikitext |" not in table
    assert ("lm-eval wikitext word perplexity: 41.20 (byte perplexity 1.98, bits per byte 0.98, 62 documents)"
            in table)
    assert "not `ppl wikitext2`" in table


def test_wikitext_missing_file_names_the_folder_beside_tasks(tmp_path):
    (tmp_path / "tasks").mkdir()
    with pytest.raises(FileNotFoundError, match=r"wikitext2/wiki.test.raw \(this file lies beside the tasks folder"):
        prepare_tasks(("wikitext",), str(tmp_path / "tasks"))


def test_wikitext_end_to_end_on_tinystories(tinystories_dir, data_dir, tmp_path, cli):
    out = cli("main.py", "--model", tinystories_dir, "--data_dir", data_dir, "--ppl_datasets", "wikitext2",
              "--seqlen", "256", "--eval_limit", "2", "--qbits", "8", "8", "16", "--tasks", "wikitext",
              "--lm_eval_limit", "2", "--output_dir", str(tmp_path), "--run_name", "wt")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "wt.json").read_text())["metrics"]
    row = metrics["lm_eval"]["tasks"]["wikitext"]
    assert row["task"] == "wikitext_local" and row["samples"] == 2
    assert row["word_perplexity"] > 1 and row["byte_perplexity"] > 1 and row["bits_per_byte"] > 0
    assert metrics["lm_eval"]["average"] == {"value": None, "metric": {}}
    assert metrics["ppl"]["wikitext2"] > 1  # our token-level perplexity, reported beside it
    assert "lm-eval wikitext word perplexity: " in out.stdout and "| ppl wikitext2 |" in out.stdout


def test_local_split_matches_from_list_without_hashing_the_table(monkeypatch):
    utils = importlib.import_module("evaluation.lm_eval_tasks.utils")
    rows = [{"question": "q1", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"},
            {"question": "q2", "choices": {"text": ["c", "d"], "label": ["A", "B"]}, "answerKey": "A"}]
    reference = datasets.Dataset.from_list(rows)
    monkeypatch.setattr(datasets.arrow_dataset, "generate_fingerprint",
                        lambda _: pytest.fail("the table was hashed"))
    split = utils._dataset("test", rows)["test"]
    assert list(split) == list(reference)
    assert split.features == reference.features
    assert split.split == "test"
    assert split._fingerprint == utils._dataset("test", [dict(r) for r in rows])["test"]._fingerprint
    assert split._fingerprint != utils._dataset("test", rows[:1])["test"]._fingerprint
