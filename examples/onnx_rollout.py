"""Run an exported policy with onnxruntime alone (no rl_trust, no torch).

    python examples/onnx_rollout.py policy.onnx --episodes 10


The file (``scripts/export.py RUN --format onnx --out policy.onnx``) takes the env's raw observations and
returns the actions to step it with; its metadata names the env. Episode ``i`` runs on env seed
``--seed + i``, as ``scripts/evaluate.py`` does, so the two print the same returns.
"""

import argparse
import json

import gymnasium as gym
import numpy as np
import onnxruntime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("policy")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    session = onnxruntime.InferenceSession(args.policy, providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    envs = gym.make_vec(meta["env_id"], num_envs=args.episodes, vectorization_mode="sync", **meta["env_kwargs"])
    obs, _ = envs.reset(seed=args.seed)
    returns, running = np.zeros(args.episodes), np.ones(args.episodes, bool)
    while running.any():
        action = session.run(["action"], {"obs": obs.astype(meta["observation_dtype"])})[0]
        obs, reward, terminated, truncated, _ = envs.step(action)
        returns += reward * running
        running &= ~(terminated | truncated)
    envs.close()
    print(json.dumps({"env": meta["env_id"], "mean_return": returns.mean(), "returns": returns.tolist()}))


if __name__ == "__main__":
    main()
