"""Make demo inputs for the README's first job: media/voice.wav (3 s) and media/face.png.

    python examples/make_demo_media.py [FOLDER]      (default: ./media)

Uses the ffmpeg that imageio-ffmpeg ships, like VIDAX itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "media")
    out.mkdir(parents=True, exist_ok=True)
    ff = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    # a voice-like tone: a vowel formant mix with a slow syllable rhythm
    voice = "aevalsrc='(0.5*sin(2*PI*220*t)+0.3*sin(2*PI*660*t)+0.2*sin(2*PI*1100*t))*abs(sin(2*PI*2.5*t))':s=48000:d=3"
    subprocess.run([*ff, "-f", "lavfi", "-i", voice, "-ac", "1", "-c:a", "pcm_s16le", str(out / "voice.wav")],
                   check=True)
    face = ("geq=r='if(lt(pow((X-128)/84,2)+pow((Y-134)/106,2),1),232,40)':"
            "g='if(lt(pow((X-128)/84,2)+pow((Y-134)/106,2),1),190,52)':"
            "b='if(lt(pow((X-128)/84,2)+pow((Y-134)/106,2),1),160,80)'")
    subprocess.run([*ff, "-f", "lavfi", "-i", "color=c=black:s=256x256:d=1", "-vf", f"format=rgb24,{face}",
                    "-frames:v", "1", str(out / "face.png")], check=True)
    print(f"wrote {out / 'voice.wav'} and {out / 'face.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
