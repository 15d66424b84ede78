"""The Ray internals nnunet_ray relies on still exist in the installed Ray: a Ray upgrade that moves one fails here."""

from __future__ import annotations

import importlib
import logging

from ray.train.v2._internal import constants

from nnunet_ray.distributed import ray_internals


def test_snapshot_file_name_is_rays():
    assert constants.CHECKPOINT_MANAGER_SNAPSHOT_FILENAME == ray_internals.SNAPSHOT_FILE


def test_kill_delay_outlasts_rays_health_check_poll():
    assert constants.DEFAULT_HEALTH_CHECK_INTERVAL_S == ray_internals.RAY_HEALTH_CHECK_INTERVAL_S
    assert ray_internals.KILL_DELAY_S > constants.DEFAULT_HEALTH_CHECK_INTERVAL_S


def test_report_logger_module_exists_and_is_quieted():
    module = importlib.import_module(ray_internals.REPORT_LOGGER_MODULE)  # ImportError = Ray moved it
    assert "logger" in vars(module)
    logger = logging.getLogger(module.__file__)
    logger.setLevel(logging.INFO)
    ray_internals.quiet_report_logs()
    assert logger.level == logging.WARNING


def test_run_exists_reads_the_snapshot(tmp_path):
    assert not ray_internals.run_exists(tmp_path)
    (tmp_path / constants.CHECKPOINT_MANAGER_SNAPSHOT_FILENAME).write_text("{}")
    assert ray_internals.run_exists(tmp_path)


def test_tune_answers_its_graceful_stop_signal_and_ray_data_has_its_progress_logger():
    import inspect

    from ray.tune import tune as tune_module

    source = inspect.getsource(tune_module._setup_signal_catching)
    assert f"signal.{ray_internals.TUNE_GRACEFUL_STOP_SIGNAL.name}" in source
    assert "TUNE_DISABLE_SIGINT_HANDLER" in source
    importlib.import_module(ray_internals.DATA_PROGRESS_LOGGER)


def test_tune_logs_the_stop_lines_it_filters_where_it_says_and_they_are_dropped():
    import inspect

    for name, starts in ray_internals.TUNE_STOP_NOISE.items():
        source = inspect.getsource(importlib.import_module(name))  # ImportError = Ray moved the module
        assert "logging.getLogger(__name__)" in source
        assert all(f'"{start}' in source for start in starts), name  # a string literal that begins with it
    ray_internals.quiet_tune_stop_noise()
    ray_internals.quiet_tune_stop_noise()  # once per process, however often an experiment starts
    noisy = logging.getLogger("ray.tune.tune")
    assert len([f for f in noisy.filters if isinstance(f, ray_internals._TuneStopNoise)]) == 1
    kept = logging.LogRecord("ray.tune.tune", logging.INFO, "", 0, "Trial finished", None, None)
    dropped = logging.LogRecord("ray.tune.tune", logging.INFO, "", 0, "Stop signal received (e.g. via SIGINT)", None,
                                None)
    assert noisy.filter(kept) and not noisy.filter(dropped)

