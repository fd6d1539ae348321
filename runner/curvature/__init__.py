"""Second-order information: Hessians (autograd and finite differences, structural zeros), the
``task=derivatives`` job, and gradient checks during descent."""
