# sourced at the start of every call of the sixteenth session: the thirteenth session's env (wheels, data, the
# default model's GGUF in pieces .gpu/a, .gpu/b, .gpu/c carried by three calls on one warm machine)
source scripts/h200_session13/env.sh
