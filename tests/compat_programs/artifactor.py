# mypy: ignore-errors
# ruff: noqa
# A riggerlib-era program: written as such programs were, not to this project's rules.
"""A riggerlib 3.1.6 program in the style of ManageIQ's artifactor, written for riggerlib.

``python artifactor.py CONFIG.json`` starts an artifact collector with its TCP server,
prints ``serving PORT`` and returns from ``main()``; riggerlib's threads keep the process
serving until a client sends ``terminate``. The tests run it unchanged under riggerlib
and, with only the import line changed, under rigger_mp.compat, and compare the files.
"""

import json
import logging
import os
import sys
import tarfile

from riggerlib import Rigger, RiggerBasePlugin, recursive_update


class Artifactor(Rigger):
    """artifactor's Rigger: config given by set_config, its own parse_config and logging."""

    def set_config(self, config):
        self.config = config

    def parse_config(self):
        if not self.config:
            return False
        self.log_dir = self.config["log_dir"]
        self.artifact_dir = self.config["artifact_dir"]
        os.makedirs(self.log_dir, exist_ok=True)
        self.logger = logging.getLogger("artifactor")
        handler = logging.FileHandler(os.path.join(self.log_dir, "artifactor.log"))
        self.logger.addHandler(handler)
        self.logger.setLevel(logging.DEBUG)
        self.squash_exceptions = self.config.get("squash_exceptions", False)
        self.setup_plugin_instances()
        self.start_server()
        self.global_data = {
            "artifactor_config": self.config,
            "log_dir": self.log_dir,
            "artifact_dir": self.artifact_dir,
            "artifacts": dict(),
            "old_artifacts": dict(),
        }

    def handle_failure(self, exc):
        self.logger.error("exception", exc_info=exc)
        with open(os.path.join(self.log_dir, "failures.txt"), "a") as f:
            f.write("{}: {}\n".format(exc[0].__name__, exc[1]))

    def log_message(self, message):
        self.logger.debug(message)


class Filedump(RiggerBasePlugin):
    """Writes what a test sends into its artifact directory."""

    def plugin_initialize(self):
        self.register_plugin_hook("filedump", self.filedump)

    def configure(self):
        self.configured = True

    @RiggerBasePlugin.check_configured
    def filedump(self, test_location, test_name, description, contents, file_type,
                 artifact_path):
        path = os.path.join(artifact_path, "filedump-{}.{}".format(description, file_type))
        with open(path, "w") as f:
            f.write(contents)
        ident = "{}/{}".format(test_location, test_name)
        return None, {"artifacts": {ident: {"files": {self.ident: [os.path.basename(path)]}}}}


class Reporter(RiggerBasePlugin):
    """Collects outcomes and writes the session report."""

    def plugin_initialize(self):
        self.register_plugin_hook("start_test", self.start_test)
        self.register_plugin_hook("finish_test", self.finish_test)
        self.register_plugin_hook("finish_session", self.finish_session)

    def configure(self):
        self.configured = True

    @RiggerBasePlugin.check_configured
    def start_test(self, test_location, test_name, artifact_path, slaveid):
        with open(os.path.join(artifact_path, "reporter.log"), "w") as f:
            f.write("started {} on a worker\n".format(test_name))
        ident = "{}/{}".format(test_location, test_name)
        return None, {"artifacts": {ident: {"started": True}}}

    @RiggerBasePlugin.check_configured
    def finish_test(self, test_location, test_name, artifact_path, test_outcome):
        with open(os.path.join(artifact_path, "reporter.log"), "a") as f:
            f.write("finished {}: {}\n".format(test_name, test_outcome))
        ident = "{}/{}".format(test_location, test_name)
        return None, {"artifacts": {ident: {"outcome": test_outcome}}}

    @RiggerBasePlugin.check_configured
    def finish_session(self, artifacts, log_dir, run_id, per_run, finished):
        report = {
            "run_id": run_id,
            "per_run": per_run,
            "tests": {k: artifacts[k] for k in sorted(artifacts)},
            "finished": sorted(finished),
        }
        with open(os.path.join(log_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        return None, {"report_written": True}


class Archiver(RiggerBasePlugin):
    """Packs each finished test's directory; its instance is backgrounded in the config."""

    def plugin_initialize(self):
        self.register_plugin_hook("finish_test", self.finish_test)

    def finish_test(self, artifact_path, test_name, artifact_dir):
        dest = os.path.join(artifact_dir, "archives")
        os.makedirs(dest, exist_ok=True)
        target = os.path.join(dest, test_name + ".tar.gz")
        with tarfile.open(target, "w:gz") as tar:
            for name in sorted(os.listdir(artifact_path)):
                if name.startswith("filedump-"):
                    tar.add(os.path.join(artifact_path, name), arcname=name)
        return None, {"archives": {test_name: target}}


class Flaky(RiggerBasePlugin):
    """Fails on tests named *boom*: handle_failure logs it and the event goes on."""

    def plugin_initialize(self):
        self.register_plugin_hook("start_test", self.start_test)

    def start_test(self, test_name):
        if "boom" in test_name:
            raise ValueError("flaky plugin cannot start " + test_name)


def parse_setup_dir(test_name, test_location, artifactor_config, artifact_dir, run_id):
    """artifactor's pre callback: the test's artifact directory."""
    path = os.path.join(artifact_dir, run_id, test_location.replace("/", "_"), test_name)
    os.makedirs(path, exist_ok=True)
    return {"artifact_path": path}, None


def start_session(run_id, config):
    """Named `config`: riggerlib passed its whole config to every callable."""
    return None, {"run_id": run_id, "per_run": config["per_run"]}


def merge_artifacts(old_artifacts, artifacts):
    return None, {"old_artifacts": recursive_update(dict(old_artifacts), artifacts)}


def note_finished(test_name):
    return None, {"finished": [test_name]}


def initialize(artifactor):
    artifactor.parse_config()
    artifactor.register_hook_callback("start_test", "pre", parse_setup_dir,
                                      name="default_start_test")
    artifactor.register_hook_callback("finish_test", "pre", parse_setup_dir,
                                      name="default_finish_test")
    artifactor.register_hook_callback("filedump", "pre", parse_setup_dir,
                                      name="default_filedump")
    artifactor.register_hook_callback("start_session", "pre", start_session,
                                      name="default_start_session")
    artifactor.register_hook_callback("finish_session", "pre", merge_artifacts,
                                      name="merge_artifacts")
    artifactor.register_hook_callback("finish_test", "post", note_finished,
                                      name="note_finished")
    artifactor.initialized = True


def main(config_path):
    with open(config_path) as f:
        art_config = json.load(f)
    art = Artifactor(None)
    art.set_config(art_config)
    art.register_plugin(Filedump, "filedump")
    art.register_plugin(Reporter, "reporter")
    art.register_plugin(Archiver, "archiver")
    art.register_plugin(Flaky, "flaky")
    initialize(art)
    art.configure_plugin("filedump")
    art.configure_plugin("reporter")
    art.configure_plugin("video")  # a disabled instance of a plugin never registered
    art.global_data["finished"] = []
    art.fire_hook("start_session", run_id=art_config["run_id"])
    print("serving {}".format(art_config["server_port"]))
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
