"""Backend options are typed per backend and validated when the backend is loaded."""

import pytest
from migbench.contracts import BackendOptions, UsageError
from migbench.registry import create_backend, registry


def test_every_registered_backends_defaults_are_valid_options():
    from migbench.registry import load_backend_class, missing_modules

    checked = 0
    for name, entry in registry().backends.items():
        if missing_modules(name):  # an extra that is not installed here
            continue
        load_backend_class(name).Options.parse(name, entry.defaults)
        checked += 1
    assert checked >= 2


def test_one_line_per_mistake_unknown_key_wrong_type_bad_value():
    with pytest.raises(UsageError) as info:
        create_backend("nova-pro", options={"read_timout": 5, "concurrency": "many", "api": "chat",
                                            "region": ""})
    lines = str(info.value).splitlines()
    assert len(lines) == 4 and all(line.startswith("nova-pro: ") for line in lines)
    text = str(info.value)
    assert "unknown option 'read_timout'" in text and "read_timeout" in text  # the known keys are named
    assert "option concurrency='many'" in text and "option api='chat'" in text and "option region=''" in text


def test_command_line_strings_are_coerced_to_the_declared_types():
    b = create_backend("sagemaker", options={"endpoint_name": "e", "read_timeout": "600", "allow_loopback": "true",
                                             "concurrency": "2", "max_payload_bytes": "1000"})
    assert (b.read_timeout, b.allow_loopback, b.max_concurrency(), b.max_payload_bytes) == (600.0, True, 2, 1000)
    assert b.config.options["read_timeout"] == "600"  # the options as given stay the run's record


def test_common_options_have_bounds():
    with pytest.raises(UsageError, match="tokens_per_min=-5"):
        BackendOptions.parse("x", {"tokens_per_min": -5})


def test_the_cli_reports_a_bad_option_in_one_line_with_exit_code_2(tmp_path, capsys):
    from migbench.cli import main

    assert main(["run", "--backend", "nova-pro", "-o", "read_timeout=soon", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nova-pro: option read_timeout='soon'" in err and "Traceback" not in err
