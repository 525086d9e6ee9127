"""The backend interface (`base`) and the entry-point registry that finds backends (`registry`)."""
