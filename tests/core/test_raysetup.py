"""The local Ray that every stage starts must let Ray Train's own actors find it (raysetup._init_local)."""
from __future__ import annotations


def test_actors_of_this_job_reach_this_cluster_and_its_state_api(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Probe:
        def check(self):
            import os

            from ray.train.v2._internal.state.util import is_actor_alive

            # What Ray Train V2's PlacementGroupCleaner does every few seconds: without RAY_ADDRESS and the
            # dashboard it dies with "Timed out while waiting for GCS" mid-run.
            return os.environ.get("RAY_ADDRESS"), is_actor_alive(ray.get_runtime_context().get_actor_id(), 30)

    address, alive = ray.get(Probe.remote().check.remote(), timeout=120)
    assert address == ray.get_runtime_context().gcs_address
    assert alive is True
