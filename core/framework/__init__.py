"""The small framework every stage runs in: stage declaration and context, runner, manifest, paths, errors."""
