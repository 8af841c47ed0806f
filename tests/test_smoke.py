from helpers import assert_final_mp4
from helpers import simple_job


def test_image_and_audio_to_final_mp4(inline_vidax, media):
    created = inline_vidax.create_run(simple_job(fps=20))
    inline_vidax.start_run(created["run_id"])
    st = inline_vidax.status(created["run_id"])
    assert st["run_status"] == "completed" and st["exit_status"] == "success", st
    assert_final_mp4(st["final"], 3.0, fps=20)
