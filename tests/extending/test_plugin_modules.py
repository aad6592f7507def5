"""A user's own plugin modules: imported from the config or $AUTOPILOT_PLUGINS, handed to the child."""

from __future__ import annotations

import os
import textwrap

import pytest

from autopilot import plugins
from autopilot.config import config_from_dict, load_profile
from autopilot.errors import ConfigError
from autopilot.workspace.proposals import validate_override


def test_a_module_beside_the_config_is_imported_and_its_folder_goes_to_the_child(tmp_path, monkeypatch):
    (tmp_path / "beside_cfg_plugin.py").write_text(textwrap.dedent("""
        from autopilot.decide.advisors import register_advisor
        from autopilot.decide.advisors.rules import RulesAdvisor
        register_advisor("beside_cfg_rules", RulesAdvisor)
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    data = load_profile("quick").model_dump()
    data["autopilot"]["plugins"] = ["beside_cfg_plugin"]
    cfg = config_from_dict(data)
    assert cfg.autopilot.plugins == ["beside_cfg_plugin"]
    from autopilot.decide.advisors import available_advisors, get_advisor
    from autopilot.decide.advisors.rules import RulesAdvisor

    assert "beside_cfg_rules" in available_advisors() and isinstance(get_advisor("beside_cfg_rules"), RulesAdvisor)
    env = plugins.child_environment({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path.resolve())
    assert env["PYTHONPATH"].split(os.pathsep)[-1] == "/elsewhere"


@pytest.mark.parametrize(
    ("plugins_value", "needle"),
    [(["no_such_plugin_module_xyz"], "autopilot.plugins: cannot import plugin module 'no_such_plugin_module_xyz'"),
     ("my_envs", "autopilot.plugins='my_envs' is invalid (rule: a list of importable module names)"),
     (["my envs"], "autopilot.plugins: 'my envs' is not a module name (rule: dotted Python identifiers)"),
     (["..x"], "autopilot.plugins: '..x' is not a module name")],
)
def test_a_bad_plugins_entry_is_a_config_error(plugins_value, needle):
    data = load_profile("quick").model_dump()
    data["autopilot"]["plugins"] = plugins_value
    with pytest.raises(ConfigError, match=__import__("re").escape(needle)):
        config_from_dict(data)


def test_a_bad_env_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv(plugins.PLUGINS_ENV, "no_such_plugin_module_abc")
    with pytest.raises(ConfigError, match="AUTOPILOT_PLUGINS='no_such_plugin_module_abc': cannot import"):
        plugins.import_user_plugins()


def test_a_proposal_may_not_choose_which_code_is_imported():
    base = load_profile("quick")
    with pytest.raises(ConfigError, match="autopilot.plugins may not be set by a proposal"):
        validate_override({"autopilot.plugins": ["evil"]}, base)
