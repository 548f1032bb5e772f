"""The label-inference attack: embed, exact nearest public neighbours, vote."""
