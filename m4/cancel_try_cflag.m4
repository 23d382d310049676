# cancel_try_cflag.m4 - configure-time helpers of libcancel.
#
# CANCEL_TRY_CFLAG(FLAG, VARIABLE)
# ---------------------------------
# Append FLAG to the shell variable VARIABLE if $CC compiles an empty
# program with it (and -Werror, so a flag the compiler only warns about is
# refused).  CFLAGS is restored afterwards.
AC_DEFUN([CANCEL_TRY_CFLAG], [
  cancel_save_CFLAGS=$CFLAGS
  CFLAGS="$CFLAGS -Werror $1"
  AC_MSG_CHECKING([whether $CC accepts $1])
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])],
    [AC_MSG_RESULT([yes]); $2="$$2 $1"], [AC_MSG_RESULT([no])])
  CFLAGS=$cancel_save_CFLAGS
])

# CANCEL_TRY_LDFLAG(FLAG, VARIABLE)
# ---------------------------------
# Set the shell variable VARIABLE to FLAG if a program links with it.
AC_DEFUN([CANCEL_TRY_LDFLAG], [
  cancel_save_LDFLAGS=$LDFLAGS
  LDFLAGS="$LDFLAGS $1"
  AC_MSG_CHECKING([whether the linker accepts $1])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([], [])],
    [AC_MSG_RESULT([yes]); $2="$1"], [AC_MSG_RESULT([no]); $2=""])
  LDFLAGS=$cancel_save_LDFLAGS
])
