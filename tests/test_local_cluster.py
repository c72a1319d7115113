"""The local multi-process launcher: exit codes, the failing process's log, the coordinator port."""
import sys

from r1jax import local_cluster

# Process 1 prints a line and dies of SIGABRT; process 0 would wait forever.
CHILD = ("import os, signal, sys, time\n"
         "if os.environ['JAX_PROCESS_ID'] == '1':\n"
         "    print('process one was here', flush=True); os.kill(os.getpid(), signal.SIGABRT)\n"
         "time.sleep(60)\n")


def test_a_process_killed_by_a_signal_fails_the_job_with_128_plus_the_signal(tmp_path, capsys):
    code = local_cluster.launch([sys.executable, "-c", CHILD], processes=2, log_dir=str(tmp_path))
    assert code == 128 + 6  # what a shell reports for SIGABRT, not a negative number
    err = capsys.readouterr().err
    assert "process 1 of 2 failed" in err and "process one was here" in err


def test_every_process_succeeding_is_success(tmp_path):
    code = local_cluster.launch([sys.executable, "-c", "import os; assert os.environ["
                                 "'JAX_NUM_PROCESSES'] == '3'"], processes=3,
                                log_dir=str(tmp_path))
    assert code == 0


def test_the_coordinator_port_is_free_and_below_the_ephemeral_range():
    low, _ = local_cluster._ephemeral_ports()
    ports = {local_cluster.free_port() for _ in range(20)}
    assert all(1024 <= p < low for p in ports) and len(ports) > 1


# Each process of a CPU job checks what it runs with after joining the job.
SERIAL = ("import os, jax\n"
          "from r1jax import distributed\n"
          "assert distributed.initialize()\n"
          "assert os.environ['PJRT_NPROC'] == '1', os.environ['PJRT_NPROC']\n"
          "assert jax.config.values['jax_cpu_enable_async_dispatch'] is False\n"
          "assert jax.process_count() == 2\n")


def test_a_cpu_job_runs_each_process_programs_one_at_a_time(tmp_path):
    """XLA:CPU runs a program's independent all-reduces concurrently and gloo pairs collectives by
    order, so a 2-process GRPO step aborted with a collective mismatch under load (about one run in
    three); the job's processes must come up serial."""
    code = local_cluster.launch([sys.executable, "-c", SERIAL], processes=2, log_dir=str(tmp_path))
    assert code == 0
