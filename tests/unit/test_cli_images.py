"""computectl image create/delete: parsing, and the upload stream it sends. Pure."""

from __future__ import annotations

import pytest

from computed.cli import commands
from computed.cli.errors import CliError
from computed.cli.main import parse, run


def test_create_parses_repeated_properties():
    args = parse(["image", "create", "mine", "--file", "g.elf", "--property", "trait:vhost:kernel"
                  "=required", "--property", "note=a=b"])  # fmt: skip
    assert args.handler == "image_create" and args.file == "g.elf"
    assert args.properties == [("trait:vhost:kernel", "required"), ("note", "a=b")]


def test_delete_takes_several_names_and_force():
    args = parse(["image", "delete", "a", "b", "--force"])
    assert args.handler == "image_delete" and args.images == ["a", "b"] and args.force


@pytest.mark.parametrize(
    "argv,words",
    [
        (["image", "create", "mine"], "--file"),
        (["image", "create", "mine", "--file", "g", "--property", "novalue"], "KEY=VALUE"),
        (["image", "create", "mine", "--file", "g", "--property", "=v"], "KEY=VALUE"),
    ],
)
def test_bad_usage_exits_2_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_an_unreadable_file_is_one_line_and_nothing_is_sent(capsys, tmp_path):
    status = run(["--scheduler", "127.0.0.1:1", "--insecure", "image", "create", "m", "--file",
                  str(tmp_path / "missing.elf")])  # fmt: skip
    err = capsys.readouterr().err
    assert (
        status == 1 and err.startswith("computectl: error: cannot read") and "Traceback" not in err
    )


def test_the_upload_stream_names_the_image_first_then_carries_every_byte():
    data = bytes(range(256)) * 2100  # a little over two pieces
    messages = list(commands._upload_messages("mine", {"k": "v"}, data))
    assert messages[0].header.name == "mine" and dict(messages[0].header.properties) == {"k": "v"}
    assert not any(m.HasField("header") for m in messages[1:])
    assert b"".join(m.data for m in messages) == data
    assert all(len(m.data) <= commands.UPLOAD_PIECE for m in messages)


def test_a_property_given_twice_is_refused(tmp_path):
    (tmp_path / "g.elf").write_bytes(b"x")
    args = parse(["image", "create", "m", "--file", str(tmp_path / "g.elf"), "--property", "a=1",
                  "--property", "a=2"])  # fmt: skip
    with pytest.raises(CliError, match="twice"):
        commands.image_create(None, args)  # refused before anything is sent


def test_image_list_and_show_render_uploaded_and_bundled_images():
    from computed.api import compute_pb2
    from computed.cli import convert
    from computed.cli.format import Result, render

    uploaded = compute_pb2.Image(
        name="mine", digest="sha256:" + "ab" * 32, size=16032, min_memory_mb=2,
        properties={"owner": "qa", "trait:vhost:kernel": "required"},
        required_traits=["vhost:kernel"], used_by=["web-1", "web-2"],
    )  # fmt: skip
    rows = [convert.image(i) for i in (compute_pb2.Image(name="hello", bundled=True), uploaded)]
    table = render(
        Result(rows, convert.IMAGE_LIST_COLUMNS, False, convert.IMAGE_HUMAN), "table", []
    )
    assert "mine" in table and "16032" in table and "hello" in table
    show = render(Result(rows[1:], convert.IMAGE_FIELDS, True, convert.IMAGE_HUMAN), "table", [])
    assert "owner=qa" in show and "web-1" in show and "web-2" in show
