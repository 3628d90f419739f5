"""One smoke test of the embedded real model: it converts, loads, talks and is scored."""

from harness import evaluate


def test_smollm2_two_turn_dialogue(shared_data, tmp_path):
    result = evaluate(task="hotpotqa", model="smollm2-135m", limit=2, data_dir=str(shared_data),
                      out=str(tmp_path / "run"), max_turns=2, max_new_tokens=24)
    model = result.run_spec["model"]
    assert model["name"] == "smollm2-135m" and len(model["sha256"]) == 64
    for row in result.per_instance:
        # a third turn only as the closing answer turn of a capped dialogue without an answer
        assert [u["speaker"] for u in row["transcript"]] == ["Alice", "Bob", "Alice"][: row["turns"]]
        assert row["turns"] <= 2 or row["transcript"][-1].get("closing")
        assert all(u["text"].strip() and 0 < u["tokens"] <= 24 for u in row["transcript"])
    assert result.cost["prompt_tokens"] > 1000 and 0 <= result.stats["mean"] <= 1
